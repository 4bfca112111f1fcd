// The analysis commands (issue 11): responses (Fig. 7), lesion (Veit et al.), report.
// Registered from main.ts by one call, so that they live apart from the training commands.
import { Command, Option } from 'commander';
import * as path from 'node:path';
import { renderFigure } from '../analysis/figure';
import { computeResponses, writeResponses } from '../analysis/responses';
import { buildFig7Spec, type ResponseSeries } from '../analysis/responses-figure';
import { analysisRuns, withRunLock } from '../analysis/run-folders';
import { loadTrainedRun } from '../analysis/trained-run';
import { resolveDataDir } from '../data/cifar10';
import { ENGINE_CHOICES } from '../engine/engine';
import { parseEngineChoice, selectEngine } from '../engine/select';

const DEFAULT_RESULTS = './results';
const warn = (m: string) => process.stderr.write(`warning: ${m}\n`);
const say = (m: string) => process.stdout.write(`${m}\n`);

function addAnalysisOptions(cmd: Command): Command {
  return cmd
    .option('--results <dir>', 'results folder (without RUN arguments: every trained run in it)', DEFAULT_RESULTS)
    .option('--data-dir <dir>', "CIFAR-10 folder (default: the one in each run's config.json)")
    .addOption(new Option('--engine <name>', 'tensor engine').choices([...ENGINE_CHOICES]).default('auto'));
}

interface AnalysisFlags {
  results: string;
  dataDir?: string;
  engine: string;
  out?: string;
}

export function addAnalysisCommands(program: Command): void {
  addAnalysisOptions(
    program
      .command('responses')
      .description(
        "Fig. 7: std of each 3x3 layer's response (BN output, before ReLU/addition) on the test set; " +
          'writes responses.csv in each run folder and a two-panel figure',
      )
      .argument('[run...]', 'run folders (default: every trained run under --results)')
      .option('--out <file>', 'figure file (.svg and .png; default <results>/fig7)'),
  ).action(async (runs: string[], o: AnalysisFlags) => {
    const dirs = analysisRuns(runs, o.results, warn);
    const dataDir = o.dataDir === undefined ? undefined : resolveDataDir(o.dataDir);
    await selectEngine(parseEngineChoice(o.engine));
    const series: ResponseSeries[] = [];
    for (const dir of dirs) {
      const run = loadTrainedRun(dir, dataDir);
      try {
        const rows = computeResponses(run);
        withRunLock(dir, () => say(`wrote ${writeResponses(dir, rows, run.iteration)}`), warn);
        series.push({ run: run.name, variant: run.config.plain ? 'plain' : 'resnet', depth: run.config.depth, rows });
      } finally {
        run.dispose();
      }
    }
    const written = await renderFigure(buildFig7Spec(series), o.out ?? path.join(o.results, 'fig7'));
    say(`wrote ${written.svg} and ${written.png}`);
  });
}
