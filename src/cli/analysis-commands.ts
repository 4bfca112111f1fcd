// The analysis commands: responses (Fig. 7), lesion (Veit et al.), report.
// Registered from main.ts by one call, so that they live apart from the training commands.
import { Command, Option } from 'commander';
import * as path from 'node:path';
import { collectAnalyses } from '../analysis/collect';
import { renderFigure } from '../report/figure';
import { buildGradientsSpec } from '../analysis/gradients-figure';
import { lesionStudy, writeLesion } from '../analysis/lesion';
import { buildLesionSpec, type LesionSeries } from '../analysis/lesion-figure';
import { computeResponses, writeResponses } from '../analysis/responses';
import { buildFig7Spec, type ResponseSeries } from '../analysis/responses-figure';
import { analysisRuns, withRunLock } from '../analysis/run-folders';
import { loadTrainedRun, RunFolderError, type TrainedRun } from '../analysis/trained-run';
import { writeReport } from '../report/html';
import { loadRuns, type RunRecord } from '../report/runs';
import { integer } from '../experiment/settings';
import { IMAGE_BYTES, resolveDataDir } from '../data/cifar10';
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

/** The first n test images of a run (a quicker, noisier lesion study). */
function firstImages(run: TrainedRun, n: number | undefined): void {
  if (n === undefined || n >= run.test.count) return;
  run.test = {
    ...run.test,
    images: run.test.images.subarray(0, n * IMAGE_BYTES),
    labels: run.test.labels.subarray(0, n),
    count: n,
  };
}

/** plot --gradients: every run's gradients.csv in one figure. */
export async function plotGradients(runs: RunRecord[], outFile: string): Promise<{ svg: string; png: string }> {
  const series = collectAnalyses(runs).gradients;
  if (series.length === 0)
    throw new RunFolderError('no run has a gradients.csv yet (runs write it while they train): nothing to plot');
  return renderFigure(buildGradientsSpec(series), outFile);
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
      .option('--images <n>', 'use only the first n test images (default: all)')
      .option('--out <file>', 'figure file (.svg and .png; default <results>/fig7)'),
  ).action(async (runs: string[], o: AnalysisFlags & { images?: string }) => {
    const images = o.images === undefined ? undefined : integer('--images', o.images, 1);
    const dirs = analysisRuns(runs, o.results, warn);
    const dataDir = o.dataDir === undefined ? undefined : resolveDataDir(o.dataDir);
    await selectEngine(parseEngineChoice(o.engine));
    const series: ResponseSeries[] = [];
    for (const dir of dirs) {
      const run = loadTrainedRun(dir, dataDir);
      try {
        firstImages(run, images);
        const rows = computeResponses(run);
        await withRunLock(dir, () => say(`wrote ${writeResponses(dir, rows, run.iteration)}`), warn);
        series.push({ run: run.name, variant: run.config.plain ? 'plain' : 'resnet', depth: run.config.depth, rows });
      } finally {
        run.dispose();
      }
    }
    const written = await renderFigure(buildFig7Spec(series), o.out ?? path.join(o.results, 'fig7'));
    say(`wrote ${written.svg} and ${written.png}`);
  });

  addAnalysisOptions(
    program
      .command('lesion')
      .description(
        "Veit et al. 2016: test error after deleting each block's residual branch (y = x), then k random blocks; " +
          'writes lesion.csv in each run folder and a figure',
      )
      .argument('[run...]', 'run folders (default: every trained run under --results)')
      .option('--draws <k>', 'random draws for each number of deleted blocks', '5')
      .option('--images <n>', 'use only the first n test images (default: all; quicker, noisier)')
      .option('--seed <n>', 'seed of the random block choices', '1')
      .option('--out <file>', 'figure file (.svg and .png; default <results>/lesion)'),
  ).action(async (runs: string[], o: AnalysisFlags & { draws: string; images?: string; seed: string }) => {
    const draws = integer('--draws', o.draws, 1);
    const seed = integer('--seed', o.seed, 0);
    const images = o.images === undefined ? undefined : integer('--images', o.images, 1);
    const dirs = analysisRuns(runs, o.results, warn);
    const dataDir = o.dataDir === undefined ? undefined : resolveDataDir(o.dataDir);
    await selectEngine(parseEngineChoice(o.engine));
    const series: LesionSeries[] = [];
    for (const dir of dirs) {
      const run = loadTrainedRun(dir, dataDir);
      try {
        firstImages(run, images);
        const rows = lesionStudy(run, {
          draws,
          seed,
          progress: (done, total) => {
            if (done % 10 === 0 || done === total) process.stderr.write(`${run.name}: ${done}/${total} evaluations\n`);
          },
        });
        await withRunLock(dir, () => say(`wrote ${writeLesion(dir, rows)}`), warn);
        series.push({ run: run.name, variant: run.config.plain ? 'plain' : 'resnet', depth: run.config.depth, rows });
      } finally {
        run.dispose();
      }
    }
    const written = await renderFigure(buildLesionSpec(series), o.out ?? path.join(o.results, 'lesion'));
    say(`wrote ${written.svg} and ${written.png}`);
  });

  program
    .command('report')
    .description(
      'one self-contained HTML page: Fig. 6, the compare table against the paper, and the Fig. 7, lesion and ' +
        'gradient figures where their data exist (opens offline)',
    )
    .option('--results <dir>', 'results folder', DEFAULT_RESULTS)
    .option('--out <file>', 'the HTML file (default <results>/report.html)')
    .action((o: { results: string; out?: string }) => {
      const runs = loadRuns(o.results, warn);
      say(`wrote ${writeReport(runs, o.results, o.out ?? path.join(o.results, 'report.html'))}`);
    });
}
