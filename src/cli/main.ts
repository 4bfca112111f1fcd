// The command line: parses flags, calls the experiment, report and data modules, and turns
// every failure into one line on stderr and a non-zero exit code.
import { Command, Option } from 'commander';
import * as path from 'node:path';
import { downloadCifar10 } from '../data/download';
import { resolveDataDir } from '../data/cifar10';
import { ENGINE_CHOICES, PRECISIONS } from '../engine/engine';
import { parseEngineChoice, parsePrecision } from '../engine/select';
import { loadExperiment } from '../experiment/grid';
import { packageVersion, runExperiment } from '../experiment/run';
import {
  checkNet,
  completeRecipe,
  integer,
  parseMilestones,
  parseShortcut,
  parseWarmup,
  positive,
  runDir,
  type Recipe,
  type RunSettings,
} from '../experiment/settings';
import { formatSummary, summarize } from '../model/summary';
import { compareRuns, formatCompare } from '../report/compare';
import { plotFig6 } from '../report/plot';
import { loadRuns } from '../report/runs';
import { createReporter } from './progress';

const DEFAULT_OUT = './results';

const SIGNAL_EXIT: Partial<Record<NodeJS.Signals, number>> = { SIGINT: 130, SIGTERM: 143, SIGHUP: 129 };

/**
 * SIGINT/SIGTERM/SIGHUP: finish the current step, checkpoint, exit. A second signal exits
 * at once. SIGHUP is what a closed terminal (or a dropped ssh session) sends: the run keeps
 * going to its checkpoint, and writes to the vanished terminal are ignored rather than
 * crashing it. `say` prints through the progress reporter so the bar does not overwrite it.
 */
function stopOnSignals(say: (line: string) => void): { requested: () => NodeJS.Signals | undefined } {
  let signal: NodeJS.Signals | undefined;
  const handler = (s: NodeJS.Signals) => {
    if (signal) process.exit(SIGNAL_EXIT[s] ?? 1);
    signal = s;
    if (s === 'SIGHUP') {
      for (const out of [process.stdout, process.stderr]) out.on('error', () => undefined);
    }
    say(`${s}: saving a checkpoint after this step (send again to quit at once)`);
  };
  for (const s of Object.keys(SIGNAL_EXIT)) process.on(s, handler);
  return { requested: () => signal };
}

/** After the checkpoint of a run stopped by `signal`: the exit code, or death by SIGHUP. */
function exitStopped(signal: NodeJS.Signals | undefined): void {
  if (signal === 'SIGHUP') {
    // Node aborts at exit (an assertion in ResetStdio) when it cannot restore the settings
    // of a terminal that hung up; dying of the signal itself skips that teardown.
    process.removeAllListeners('SIGHUP');
    process.kill(process.pid, 'SIGHUP');
  }
  process.exitCode = (signal && SIGNAL_EXIT[signal]) ?? 130;
}

interface CommonRunFlags {
  dataDir?: string;
  out: string;
  engine: string;
  threads?: string;
  precision: string;
  recordsPerFile: string;
  fresh?: boolean;
}

function common(
  o: CommonRunFlags,
): Pick<RunSettings, 'dataDir' | 'out' | 'engine' | 'threads' | 'precision' | 'recordsPerFile' | 'fresh'> {
  return {
    dataDir: resolveDataDir(o.dataDir),
    out: o.out,
    engine: parseEngineChoice(o.engine),
    threads: o.threads === undefined ? undefined : integer('--threads', o.threads, 1),
    precision: parsePrecision(o.precision),
    recordsPerFile: integer('--records-per-file', o.recordsPerFile, 1),
    fresh: o.fresh === true,
  };
}

function addCommonRunOptions(cmd: Command): Command {
  return cmd
    .option('--data-dir <dir>', 'CIFAR-10 binary files (default: $CIFAR10_DIR, else ./data/cifar-10-batches-bin)')
    .option('--out <dir>', 'results folder', DEFAULT_OUT)
    .addOption(new Option('--engine <name>', 'tensor engine').choices([...ENGINE_CHOICES]).default('auto'))
    .option('--threads <n>', 'compute threads (default: all cores)')
    .addOption(
      new Option(
        '--precision <p>',
        'convolution arithmetic: bf16 = bf16 products, f32 sums (native engine, AVX512-BF16/AMX CPUs)',
      )
        .choices([...PRECISIONS])
        .default('fp32'),
    )
    .option('--fresh', 'discard an existing run of the same settings and start over')
    .addOption(
      new Option('--records-per-file <n>', 'records per data file (10000 in CIFAR-10; for small synthetic test data)')
        .default('10000')
        .hideHelp(),
    );
}

/**
 * An option's help line: its description, then "required", the choices and the default,
 * unquoted (commander prints string defaults as JSON: "64000").
 */
function optionDescription(o: Option): string {
  const extra: string[] = [];
  if (o.mandatory) extra.push('required');
  if (o.argChoices) extra.push(`choices: ${o.argChoices.join(', ')}`);
  if (o.defaultValue !== undefined && !o.negate)
    extra.push(`default: ${o.defaultValueDescription ?? String(o.defaultValue)}`);
  return extra.length ? `${o.description} (${extra.join('; ')})` : o.description;
}

/** Shown at the end of each command's --help. */
const EXAMPLES: Record<string, string[]> = {
  run: [
    'resnet-exp run --depth 20 --iterations 400 --eval-every 100   # a first look, minutes',
    "resnet-exp run --depth 56 --plain --seed 2                     # the paper's 64k schedule",
  ],
  grid: ['resnet-exp grid quick', 'resnet-exp grid experiments/fig6-plain.json --out /scratch/results'],
  compare: ['resnet-exp compare', 'resnet-exp compare --results results/quick --json > compare.json'],
  plot: ['resnet-exp plot --results results/quick --out fig6-quick   # fig6-quick.svg and .png'],
  download: ['resnet-exp download --data-dir ~/data/cifar-10-batches-bin'],
  summary: ['resnet-exp summary --depth 110', 'resnet-exp summary --depth 56 --plain'],
};

/** A command's help ends with examples (each a line: "$ resnet-exp ..."). */
function examples(cmd: Command, ...lines: string[]): Command {
  return cmd.addHelpText(
    'after',
    `\nExample${lines.length > 1 ? 's' : ''}:\n${lines.map((l) => `  $ ${l}`).join('\n')}`,
  );
}

export function buildProgram(): Command {
  const program = new Command('resnet-exp')
    .description('Reproduce the degradation experiment of He et al. 2016 (plain vs residual nets on CIFAR-10)')
    .version(packageVersion())
    .showHelpAfterError('(run with --help for usage)')
    .configureHelp({ optionDescription, sortSubcommands: false });
  examples(
    program,
    'resnet-exp download',
    'resnet-exp run --depth 20 --iterations 400 --eval-every 100',
    'resnet-exp grid quick && resnet-exp compare && resnet-exp plot',
  );

  addCommonRunOptions(
    program
      .command('run')
      .description("train one network with the paper's recipe; the same command again resumes it")
      .usage('--depth <n> [options]')
      .requiredOption('--depth <n>', 'weighted layers, 6n+2: 20, 32, 44, 56, 110, 1202')
      .option('--plain', 'no shortcuts (plain network)')
      .option(
        '--shortcut <A|B>',
        'A: identity + zero-padding (paper, CIFAR), B: projection where dimensions change',
        'A',
      )
      .option('--iterations <n>', 'training iterations', '64000')
      .option(
        '--milestones <list>',
        'iterations where the lr is divided by 10 (default 32000,48000, or 50%,75% of --iterations)',
      )
      .option('--lr <x>', 'learning rate', '0.1')
      .option('--batch <n>', 'mini-batch size', '128')
      .option('--momentum <x>', 'SGD momentum', '0.9')
      .option('--weight-decay <x>', 'weight decay on conv and fc weights', '0.0001')
      .option('--warmup <auto|on|off>', 'lr 0.01 until training error < 80% (auto: depth >= 110)', 'auto')
      .option('--val <n>', 'hold out the last n training images as a validation set (paper: 5000)', '0')
      .option('--eval-every <n>', 'iterations between evaluations, CSV rows and checkpoints', '500')
      .option('--seed <n>', 'random seed (init, data order, augmentation)', '1'),
  ).action(async (o) => {
    const itersGiven = program.commands.find((c) => c.name() === 'run')?.getOptionValueSource('iterations') === 'cli';
    const recipe: Partial<Recipe> = {
      lr: positive('--lr', o.lr),
      batch: integer('--batch', o.batch, 1),
      momentum: positive('--momentum', o.momentum, true),
      weightDecay: positive('--weight-decay', o.weightDecay, true),
      warmup: parseWarmup(o.warmup),
      val: integer('--val', o.val, 0),
      evalEvery: integer('--eval-every', o.evalEvery, 1),
    };
    if (itersGiven) recipe.iterations = integer('--iterations', o.iterations, 1);
    if (o.milestones !== undefined) recipe.milestones = parseMilestones(o.milestones);
    const settings: RunSettings = {
      net: checkNet({
        depth: integer('--depth', o.depth, 1),
        plain: o.plain === true,
        shortcut: parseShortcut(o.shortcut),
      }),
      seed: integer('--seed', o.seed, 0),
      recipe: completeRecipe(recipe),
      ...common(o),
    };
    const reporter = createReporter();
    const stop = stopOnSignals((line) => reporter.log(line));
    const outcome = await runExperiment(settings, reporter, () => stop.requested() !== undefined);
    if (outcome.status === 'stopped') exitStopped(stop.requested());
  });

  addCommonRunOptions(
    program
      .command('grid')
      .description('run every run of an experiment file (experiments/*.json): fig6-plain, fig6-resnet, table6, quick')
      .argument('<experiment>', 'name in experiments/ or a path to a JSON file'),
  ).action(async (name: string, o) => {
    const exp = loadExperiment(name);
    const base = common(o);
    const out = path.join(base.out, exp.out);
    const reporter = createReporter();
    reporter.log(`${exp.name}: ${exp.description} (${exp.runs.length} runs in ${out})`);
    const stop = stopOnSignals((line) => reporter.log(line));
    for (const [i, r] of exp.runs.entries()) {
      const settings: RunSettings = { ...base, out, net: r.net, seed: r.seed, recipe: exp.recipe };
      reporter.log(`[${i + 1}/${exp.runs.length}] ${runDir(settings)}`);
      const outcome = await runExperiment(settings, reporter, () => stop.requested() !== undefined);
      if (outcome.status === 'stopped') {
        exitStopped(stop.requested());
        return;
      }
    }
  });

  program
    .command('compare')
    .description('table of final training/test errors per network, against the paper, with a verdict on degradation')
    .option('--results <dir>', 'results folder', DEFAULT_OUT)
    .option('--json', 'print JSON instead of a table')
    .action((o: { results: string; json?: boolean }) => {
      const report = compareRuns(loadRuns(o.results, (m) => process.stderr.write(`warning: ${m}\n`)));
      if (report.rows.length === 0) {
        throw new Error(`no runs found in ${o.results} (folders with config.json and metrics.csv); pass --results`);
      }
      process.stdout.write(o.json ? JSON.stringify(report, null, 2) + '\n' : formatCompare(report) + '\n');
    });

  program
    .command('plot')
    .description('Fig. 6: error (%) against iterations, training dashed and test bold; writes SVG and PNG')
    .option('--results <dir>', 'results folder', DEFAULT_OUT)
    .option('--out <file>', 'output file (.svg and .png are written; default <results>/fig6)')
    .action(async (o: { results: string; out?: string }) => {
      const runs = loadRuns(o.results, (m) => process.stderr.write(`warning: ${m}\n`));
      const written = await plotFig6(runs, o.out ?? path.join(o.results, 'fig6'));
      process.stdout.write(`wrote ${written.svg} and ${written.png}\n`);
    });

  program
    .command('download')
    .description('download the CIFAR-10 binary version, check its md5 and unpack it')
    .option('--data-dir <dir>', 'where the files go (default: $CIFAR10_DIR, else ./data/cifar-10-batches-bin)')
    .action(async (o: { dataDir?: string }) => {
      await downloadCifar10(resolveDataDir(o.dataDir), { progress: true });
    });

  program
    .command('summary')
    .description('layer table, parameter count and forward multiply-accumulates of a network')
    .requiredOption('--depth <n>', 'weighted layers, 6n+2')
    .option('--plain', 'no shortcuts')
    .option('--shortcut <A|B>', 'shortcut option', 'A')
    .action((o: { depth: string; plain?: boolean; shortcut: string }) => {
      const depth = integer('--depth', o.depth, 1);
      process.stdout.write(
        formatSummary(summarize({ depth, plain: o.plain === true, shortcut: parseShortcut(o.shortcut) })) + '\n',
      );
    });

  for (const c of program.commands) {
    const lines = EXAMPLES[c.name()];
    if (lines) examples(c, ...lines);
  }
  return program;
}

export async function main(argv: string[]): Promise<void> {
  try {
    await buildProgram().parseAsync(argv);
  } catch (e) {
    // Every error the user can cause has a one-line message; anything else is a bug,
    // still shown as one line, with the stack on request.
    const message = String((e as Error)?.message ?? e).split('\n')[0];
    process.stderr.write(`error: ${message}\n`);
    if (process.env.RESNET_EXP_DEBUG) process.stderr.write(`${(e as Error)?.stack ?? ''}\n`);
    process.exitCode = 1;
  }
}

if (require.main === module) void main(process.argv);
