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
  checkThreads,
  PAPER_RECIPE,
  completeRecipe,
  integer,
  parseMilestones,
  parseShortcut,
  parseWarmup,
  positive,
  runDir,
  type Recipe,
  type RunSettings,
  SettingsError,
} from '../experiment/settings';
import { IMAGENET_ARCHS, parseArch } from '../model/imagenet';
import { formatSummary, summarize, summarizeImageNet } from '../model/summary';
import { compareRuns, formatCompare } from '../report/compare';
import { plotFig6 } from '../report/plot';
import { loadRuns } from '../report/runs';
import { addAnalysisCommands, plotGradients } from './analysis-commands';
import { createReporter } from './progress';
import { chooseIndex } from '../cluster/index';
import { addClusterOptions, clusterAction, type ClusterFlags } from '../cluster/grid-flags';
import { requeueSelf } from '../cluster/requeue';
import { joinedWorld, joinWorld, quietReporter, type World } from '../distributed/world';

const DEFAULT_OUT = './results';

const SIGNAL_EXIT: Partial<Record<NodeJS.Signals, number>> = { SIGINT: 130, SIGTERM: 143, SIGHUP: 129, SIGUSR1: 138 };

/**
 * SIGINT/SIGTERM/SIGHUP: finish the current step, checkpoint, exit. A second signal exits
 * at once. SIGHUP is what a closed terminal (or a dropped ssh session) sends: the run keeps
 * going to its checkpoint, and writes to the vanished terminal are ignored rather than
 * crashing it. SIGUSR1 (Slurm's time-limit warning, --signal=B:USR1): the same, then the
 * task requeues itself (exitStopped). `say` prints through the progress reporter so the bar
 * does not overwrite it.
 */
function stopOnSignals(say: (line: string) => void): { requested: () => NodeJS.Signals | undefined } {
  let signal: NodeJS.Signals | undefined;
  const handler = (s: NodeJS.Signals) => {
    if (signal) {
      // Under MPI a lone exit would leave the other ranks waiting: end them all.
      if ((joinedWorld()?.size ?? 1) > 1) joinedWorld()?.abort(SIGNAL_EXIT[s] ?? 1);
      process.exit(SIGNAL_EXIT[s] ?? 1);
    }
    signal = s;
    if (s === 'SIGHUP') {
      for (const out of [process.stdout, process.stderr]) out.on('error', () => undefined);
    }
    say(`${s}: saving a checkpoint after this step (send again to quit at once)`);
  };
  for (const s of Object.keys(SIGNAL_EXIT)) process.on(s, handler);
  return { requested: () => signal };
}

/** After the checkpoint of a run stopped by `signal`: the exit code, a requeue on SIGUSR1, or death by SIGHUP. */
function exitStopped(signal: NodeJS.Signals | undefined): void {
  if (signal === 'SIGUSR1') requeueSelf((line) => process.stderr.write(`${line}\n`));
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
  bnShards: string;
}

function common(
  o: CommonRunFlags,
): Pick<RunSettings, 'dataDir' | 'out' | 'engine' | 'threads' | 'precision' | 'recordsPerFile' | 'fresh' | 'bnShards'> {
  return {
    dataDir: resolveDataDir(o.dataDir),
    out: o.out,
    engine: parseEngineChoice(o.engine),
    threads: o.threads === undefined ? undefined : checkThreads(o.threads),
    precision: parsePrecision(o.precision),
    recordsPerFile: integer('--records-per-file', o.recordsPerFile, 1),
    fresh: o.fresh === true,
    bnShards: integer('--bn-shards', o.bnShards, 1),
  };
}

/** The launcher's world (data-parallel under mpirun/srun) and its reporter. */
function worldFor(engine: RunSettings['engine']): { world: World; reporter: ReturnType<typeof createReporter> } {
  const world = joinWorld(engine === 'auto' || engine === 'native');
  return { world, reporter: world.rank === 0 ? createReporter() : quietReporter };
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
    .option('--bn-shards <k>', 'batch-norm statistics over k equal sub-batches (as k data-parallel processes)', '1')
    .addOption(
      new Option('--records-per-file <n>', 'records per data file (10000 in CIFAR-10; for small synthetic test data)')
        .default('10000')
        .hideHelp(),
    );
}

/** The paper's recipe (settings.ts): the `run` flags' defaults, shown by --help. */
const R = PAPER_RECIPE;

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
  grid: [
    'resnet-exp grid quick',
    'resnet-exp grid experiments/fig6-plain.json --out /scratch/results',
    'resnet-exp grid fig6-resnet --list                    # every run and its state',
    'resnet-exp grid fig6-resnet --emit slurm --time 1-00:00:00 > fig6.sbatch',
    'resnet-exp grid fig6-resnet --emit k8s --image registry.example/resnet-exp:0.1.0 > fig6.yaml',
  ],
  compare: ['resnet-exp compare', 'resnet-exp compare --results results/quick --json > compare.json'],
  plot: ['resnet-exp plot --results results/quick --out fig6-quick   # fig6-quick.svg and .png'],
  download: ['resnet-exp download --data-dir ~/data/cifar-10-batches-bin'],
  summary: [
    'resnet-exp summary --depth 110',
    'resnet-exp summary --depth 56 --plain',
    'resnet-exp summary --arch resnet50',
  ],
  responses: ['resnet-exp responses --results results/quick --out fig7'],
  lesion: ['resnet-exp lesion results/quick/resnet-56-s1-it1200 --draws 5 --images 2000'],
  report: ['resnet-exp report --results results/quick --out results/quick/report.html'],
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
      .option('--iterations <n>', 'training iterations', String(R.iterations))
      .option(
        '--milestones <list>',
        `iterations where the lr is divided by 10 (default ${R.milestones.join(',')}, or 50%,75% of --iterations)`,
      )
      .option('--lr <x>', 'learning rate', String(R.lr))
      .option('--batch <n>', 'mini-batch size', String(R.batch))
      .option('--momentum <x>', 'SGD momentum', String(R.momentum))
      .option('--weight-decay <x>', 'weight decay on conv and fc weights', String(R.weightDecay))
      .option('--warmup <auto|on|off>', 'lr 0.01 until training error < 80% (auto: depth >= 110)', R.warmup)
      .option('--val <n>', 'hold out the last n training images as a validation set (paper: 5000)', String(R.val))
      .option('--eval-every <n>', 'iterations between evaluations, CSV rows and checkpoints', String(R.evalEvery))
      .option('--seed <n>', 'random seed (init, data order, augmentation)', '1')
      .option('--clip-grad-norm <x>', "clip the global gradient norm to x (off by default; not the paper's recipe)"),
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
    if (o.clipGradNorm !== undefined) recipe.clipGradNorm = positive('--clip-grad-norm', o.clipGradNorm);
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
    const { world, reporter } = worldFor(settings.engine);
    const stop = stopOnSignals((line) => reporter.log(line));
    const outcome = await runExperiment(settings, reporter, () => stop.requested() !== undefined, world);
    if (outcome.status === 'stopped') exitStopped(stop.requested());
  });

  addClusterOptions(
    addCommonRunOptions(
      program
        .command('grid')
        .description('run every run of an experiment file (experiments/*.json): fig6-plain, fig6-resnet, table6, quick')
        .argument('<experiment>', 'name in experiments/ or a path to a JSON file'),
    ),
  ).action(async (name: string, o: CommonRunFlags & ClusterFlags) => {
    const exp = loadExperiment(name);
    const base = common(o);
    if (clusterAction(exp, name, base, o)) return;
    const chosen = chooseIndex(o.index, exp.runs.length);
    const out = path.join(base.out, exp.out);
    const { world, reporter } = worldFor(base.engine);
    reporter.log(`${exp.name}: ${exp.description} (${exp.runs.length} runs in ${out})`);
    if (chosen) reporter.log(`run ${chosen.index} of 0-${exp.runs.length - 1}, from ${chosen.source}`);
    const stop = stopOnSignals((line) => reporter.log(line));
    for (const [i, r] of exp.runs.entries()) {
      if (chosen && i !== chosen.index) continue;
      const settings: RunSettings = { ...base, out, net: r.net, seed: r.seed, recipe: exp.recipe };
      // A scheduler may start a replacement task beside one that is still stopping: wait.
      if (chosen && chosen.source !== '--index') settings.waitForLock = true;
      reporter.log(`[${i + 1}/${exp.runs.length}] ${runDir(settings)}`);
      const outcome = await runExperiment(settings, reporter, () => stop.requested() !== undefined, world);
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
    .option('--gradients', "instead: each conv layer's gradient norm against depth (default <results>/gradients)")
    .action(async (o: { results: string; out?: string; gradients?: boolean }) => {
      if (o.out !== undefined && o.out.trim() === '') throw new Error('--out is empty; give a file name such as fig6');
      const runs = loadRuns(o.results, (m) => process.stderr.write(`warning: ${m}\n`));
      const written = o.gradients // plot --gradients (src/analysis/gradients-figure.ts)
        ? await plotGradients(runs, o.out ?? path.join(o.results, 'gradients'))
        : await plotFig6(runs, o.out ?? path.join(o.results, 'fig6'));
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
    .option('--depth <n>', 'weighted layers of a CIFAR-10 net, 6n+2')
    .option('--plain', 'no shortcuts')
    .option('--shortcut <A|B>', 'shortcut option', 'A')
    .option('--arch <name>', `an ImageNet net of Table 1 instead: ${IMAGENET_ARCHS.join(', ')}`)
    .action((o: { depth?: string; plain?: boolean; shortcut: string; arch?: string }) => {
      if ((o.arch === undefined) === (o.depth === undefined))
        throw new SettingsError('summary needs either --depth (CIFAR-10 net) or --arch (ImageNet net)');
      const summary =
        o.arch !== undefined
          ? summarizeImageNet(parseArch(o.arch))
          : summarize({
              depth: integer('--depth', o.depth as string, 1),
              plain: o.plain === true,
              shortcut: parseShortcut(o.shortcut),
            });
      process.stdout.write(formatSummary(summary) + '\n');
    });

  addAnalysisCommands(program); // responses, lesion, report (src/cli/analysis-commands.ts)

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
    // Data-parallel: the other ranks may be waiting in a collective for this one: end the job.
    const world = joinedWorld();
    if (world && world.size > 1) world.abort(1);
  }
}

if (require.main === module) void main(process.argv);
