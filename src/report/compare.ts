// `compare`: one line per configuration, averaged over seeds, beside the paper's
// numbers, and a verdict on the paper's claim: do deeper nets END with higher
// training error (degradation) or lower?
import { dedupeSeeds, type MetricsRow, type RunRecord } from './runs';
import { PAPER_ITERATIONS, REPRODUCTION, TABLE6_RESNET, type PaperFigure } from './paper';

/**
 * "Final training error" is the last logged interval's train_error: the mean over the
 * mini-batches since the previous evaluation (--eval-every iterations, 500 by default),
 * which is what the end of the paper's dashed curves shows. Averaging a number of rows
 * instead would mix windows of different lengths and, after a learning-rate drop, errors
 * from before it (a plain-20 whose seeds ended at 71.4 and 72.7 % came out at 76.7 %).
 */
export interface TrainWindow {
  /** Iterations (from, to] whose mini-batches the figure averages. */
  from: number;
  to: number;
}

/** How far one seed got. */
export interface SeedProgress {
  seed: number;
  /** The last logged iteration (0 with no rows). */
  iterations: number;
  finished: boolean;
}

/** Mean and sample standard deviation over seeds (std null with fewer than 2). */
export interface Stat {
  mean: number;
  std: number | null;
  n: number;
}

/** A reference figure, JSON-safe (nulls, not missing fields). */
export interface Reference {
  testError: number;
  mean: number | null;
  std: number | null;
  source: string;
}

export interface CompareRow {
  /** e.g. "plain-20", "resnet-56-B". */
  label: string;
  variant: 'plain' | 'resnet';
  depth: number;
  shortcut: 'A' | 'B';
  plannedIterations: number;
  /** The recipe/precision/data identity shared by the row's runs (runs.ts). */
  recipeKey: string;
  seeds: number[];
  finishedSeeds: number;
  params: number;
  /** The least progress over seeds: the last logged iteration (0 with no rows). */
  iterationsDone: number;
  /** Each seed's progress, by seed. */
  perSeed: SeedProgress[];
  /** The windows the final training errors average, one per distinct window. */
  trainWindows: TrainWindow[];
  finalTrainError: Stat | null;
  finalTestError: Stat | null;
  bestTestError: Stat | null;
  /** Table 6 of the paper, ResNets only. */
  paper: Reference | null;
  /** The public 5-seed reproduction, where it has this configuration. */
  reproduction: Reference | null;
}

export interface Verdict {
  variant: 'plain' | 'resnet';
  shortcut: 'A' | 'B';
  plannedIterations: number;
  /** Final training error (mean over seeds) by increasing depth. */
  points: { depth: number; trainError: number }[];
  /** null with fewer than two depths. */
  trend: 'rises' | 'falls' | 'mixed' | null;
  /** Deepest ends with higher training error than shallowest; null with one depth. */
  degradation: boolean | null;
  /** The verdict proves little yet: see `reasons`. */
  provisional: boolean;
  /** Why it is provisional: a short schedule, unfinished runs, a single seed. */
  reasons: string[];
  text: string;
}

export interface CompareReport {
  rows: CompareRow[];
  verdicts: Verdict[];
  notes: string[];
}

export function compareRuns(all: RunRecord[]): CompareReport {
  // Seeds of one configuration = same net AND same recipe/precision/data
  // (recipeKey); a seed found twice counts once. Different recipes are different rows.
  const dedupeNotes: string[] = [];
  const runs = dedupeSeeds(all, (m) => dedupeNotes.push(m));
  const groups = groupBy(runs, (r) => `${r.variant}|${r.shortcut}|${r.plannedIterations}|${r.depth}|${r.recipeKey}`);
  const rows = [...groups.values()]
    .map(toRow)
    .sort(
      (a, b) =>
        variantOrder(a.variant) - variantOrder(b.variant) ||
        a.shortcut.localeCompare(b.shortcut) ||
        a.plannedIterations - b.plannedIterations ||
        a.depth - b.depth,
    );

  const verdictGroups = groupBy(rows, (r) => `${r.variant}|${r.shortcut}|${r.plannedIterations}|${r.recipeKey}`);
  const verdicts = [...verdictGroups.values()].map(toVerdict);

  const lengths = [...new Set(rows.flatMap((r) => r.trainWindows.map((w) => w.to - w.from)))].sort((a, b) => a - b);
  const notes = [
    ...dedupeNotes,
    `final training error = each run's last logged interval: the mean train_error of its last ` +
      `${lengths.map(formatIterations).join(' or ') || '?'} iterations (the mini-batches since the ` +
      `evaluation before its last); ± is the sample std over seeds.`,
    `verdicts compare final training error across depths, as Fig. 6 does.`,
  ];
  if (rows.some((r) => (r.paper || r.reproduction) && r.plannedIterations !== PAPER_ITERATIONS)) {
    notes.push(
      `paper and reproduction figures are after ${formatIterations(PAPER_ITERATIONS)} ` +
        `iterations; shorter schedules are not comparable with them.`,
    );
  }
  if (rows.some((r) => r.paper && r.shortcut !== 'A')) {
    notes.push('paper figures are for option-A shortcuts.');
  }
  return { rows, verdicts, notes };
}

function toRow(runs: RunRecord[]): CompareRow {
  const first = runs[0];
  const perRun = runs.map((r) => ({
    train: finalTrainError(r.rows),
    window: finalTrainWindow(r.rows),
    test: r.rows.length ? r.rows[r.rows.length - 1].testError : null,
    best: r.rows.length ? Math.min(...r.rows.map((x) => x.testError)) : null,
  }));
  const ref = (f: PaperFigure | undefined): Reference | null =>
    f
      ? {
          testError: f.testError,
          mean: f.mean ?? null,
          std: f.std ?? null,
          source: f.source,
        }
      : null;
  return {
    label: `${first.variant}-${first.depth}${first.shortcut === 'B' ? '-B' : ''}${first.recipeTag ? ` ${first.recipeTag}` : ''}`,
    variant: first.variant,
    depth: first.depth,
    shortcut: first.shortcut,
    plannedIterations: first.plannedIterations,
    recipeKey: first.recipeKey,
    seeds: runs.map((r) => r.seed).sort((a, b) => a - b),
    finishedSeeds: runs.filter((r) => r.finished).length,
    params: first.params,
    iterationsDone: Math.min(...runs.map((r) => r.rows.at(-1)?.iteration ?? 0)),
    perSeed: runs
      .map((r) => ({ seed: r.seed, iterations: r.rows.at(-1)?.iteration ?? 0, finished: r.finished }))
      .sort((a, b) => a.seed - b.seed),
    trainWindows: uniqueWindows(perRun.map((p) => p.window)),
    finalTrainError: stat(perRun.map((p) => p.train)),
    finalTestError: stat(perRun.map((p) => p.test)),
    bestTestError: stat(perRun.map((p) => p.best)),
    paper: first.variant === 'resnet' ? ref(TABLE6_RESNET[first.depth]) : null,
    reproduction: ref(REPRODUCTION[first.variant][first.depth]),
  };
}

/** The last logged interval's train_error; null with no rows. */
export function finalTrainError(rows: MetricsRow[]): number | null {
  return rows.at(-1)?.trainError ?? null;
}

/** The iterations the last row's train_error covers; null with no rows. */
export function finalTrainWindow(rows: MetricsRow[]): TrainWindow | null {
  const last = rows.at(-1);
  return last ? { from: rows.at(-2)?.iteration ?? 0, to: last.iteration } : null;
}

function uniqueWindows(windows: (TrainWindow | null)[]): TrainWindow[] {
  const seen = new Map<string, TrainWindow>();
  for (const w of windows) if (w) seen.set(`${w.from}-${w.to}`, w);
  return [...seen.values()].sort((a, b) => a.to - b.to);
}

function toVerdict(rows: CompareRow[]): Verdict {
  const { variant, shortcut, plannedIterations } = rows[0];
  const points = rows
    .filter((r) => r.finalTrainError !== null)
    .map((r) => ({ depth: r.depth, trainError: r.finalTrainError!.mean }));
  const total = rows.reduce((s, r) => s + r.seeds.length, 0);
  const unfinished = total - rows.reduce((s, r) => s + r.finishedSeeds, 0);
  // Why the verdict may not hold: the paper's curves separate over 64k iterations and its
  // differences are a few percent, within what one seed can vary.
  const reasons: string[] = [];
  if (plannedIterations < PAPER_ITERATIONS) {
    reasons.push(
      `short schedule: ${formatIterations(plannedIterations)} of the paper's ${formatIterations(PAPER_ITERATIONS)} iterations`,
    );
  }
  const least = Math.min(...rows.map((r) => r.iterationsDone));
  if (unfinished > 0) {
    reasons.push(
      `${unfinished} of ${total} runs unfinished, least progress ` +
        `${formatIterations(least)}/${formatIterations(plannedIterations)}`,
    );
  }
  if (rows.some((r) => (r.finalTrainError?.n ?? 0) < 2))
    reasons.push('a single seed per depth, no spread to compare with');
  const provisional = reasons.length > 0;

  const who =
    (shortcut === 'B' ? `${variant}-B` : variant) +
    (plannedIterations !== PAPER_ITERATIONS ? ` (${formatIterations(plannedIterations)} it.)` : '');
  const caveat = provisional ? ` [provisional: ${reasons.join('; ')}]` : '';
  if (points.length < 2) {
    const have = points.length ? `only depth ${points[0].depth}` : 'no logged rows yet';
    return {
      variant,
      shortcut,
      plannedIterations,
      points,
      trend: null,
      degradation: null,
      provisional,
      reasons,
      text: `${who}: ${have}; a verdict needs two depths`,
    };
  }

  const steps = points.slice(1).map((p, i) => Math.sign(p.trainError - points[i].trainError));
  const trend = steps.every((s) => s > 0) ? 'rises' : steps.every((s) => s < 0) ? 'falls' : 'mixed';
  const degradation = points[points.length - 1].trainError > points[0].trainError;
  const chain = points
    .map((p, i) => {
      const pct = `${p.depth}: ${p.trainError.toFixed(1)}%`;
      if (i === 0) return pct;
      const s = steps[i - 1];
      return `${s > 0 ? '<' : s < 0 ? '>' : '='} ${pct}`;
    })
    .join(' ');
  const outcome = degradation ? 'degradation' : 'no degradation';
  const text =
    trend === 'mixed'
      ? `${who}: training error is not monotonic in depth (${chain}); ` +
        `deepest vs shallowest: ${degradation ? 'higher' : 'not higher'} -> ${outcome}`
      : `${who}: training error ${trend} with depth (${chain}) -> ${outcome}`;
  return {
    variant,
    shortcut,
    plannedIterations,
    points,
    trend,
    degradation,
    provisional,
    reasons,
    text: text + caveat,
  };
}

/** The terminal view of a report: an aligned table, the verdicts, the notes. */
export function formatCompare(report: CompareReport): string {
  if (report.rows.length === 0) return 'no runs found\n';
  const header = [
    'config',
    'seeds',
    'params',
    'iter. done (per seed)/planned',
    'final train err %',
    'final test err %',
    'best test err %',
    'paper T6',
    'reproduction',
  ];
  const table: string[][] = [header];
  const groupStarts = new Set<number>();
  let lastGroup = '';
  for (const r of report.rows) {
    const group = `${r.variant}|${r.shortcut}|${r.plannedIterations}`;
    if (group !== lastGroup && table.length > 1) groupStarts.add(table.length);
    lastGroup = group;
    const seeds =
      r.finishedSeeds === r.seeds.length
        ? `${r.seeds.length}`
        : `${r.seeds.length} (${r.seeds.length - r.finishedSeeds} unfinished)`;
    table.push([
      r.label,
      seeds,
      `${(r.params / 1e6).toFixed(2)}M`,
      `${r.perSeed.map((p) => formatIterations(p.iterations)).join(',')}/${formatIterations(r.plannedIterations)}`,
      formatStat(r.finalTrainError),
      formatStat(r.finalTestError),
      formatStat(r.bestTestError),
      r.paper ? r.paper.testError.toFixed(2) + (r.paper.mean !== null ? '*' : '') : '',
      r.reproduction
        ? formatStat({
            mean: r.reproduction.testError,
            std: r.reproduction.std,
            n: 5,
          })
        : '',
    ]);
  }
  const widths = header.map((_, c) => Math.max(...table.map((row) => row[c].length)));
  const lines = table.map((row, i) => {
    const line = row
      .map((cell, c) => (c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c])))
      .join('  ')
      .trimEnd();
    return (groupStarts.has(i) ? '\n' : '') + line;
  });
  lines.splice(1, 0, widths.map((w) => '-'.repeat(w)).join('  '));

  const out = [...lines, '', 'degradation (final training error vs depth):'];
  for (const v of report.verdicts) out.push(`  ${v.text}`);
  out.push('');
  for (const n of report.notes) out.push(`note: ${n}`);
  const starred = report.rows.find((r) => r.paper !== null && r.paper.mean !== null);
  if (starred) out.push(`note: * ${starred.label}: ${starred.paper!.source}.`);
  return out.join('\n') + '\n';
}

function formatStat(s: Stat | null): string {
  if (!s) return '-';
  return s.std === null ? s.mean.toFixed(2) : `${s.mean.toFixed(2)} ± ${s.std.toFixed(2)}`;
}

/** 64000 -> "64k", 32500 -> "32.5k", 500 -> "500". */
export function formatIterations(n: number): string {
  return n >= 1000 ? `${+(n / 1000).toFixed(1)}k` : `${n}`;
}

function stat(values: (number | null)[]): Stat | null {
  const xs = values.filter((v): v is number => v !== null);
  if (xs.length === 0) return null;
  const mean = xs.reduce((s, x) => s + x, 0) / xs.length;
  const std = xs.length >= 2 ? Math.sqrt(xs.reduce((s, x) => s + (x - mean) ** 2, 0) / (xs.length - 1)) : null;
  return { mean, std, n: xs.length };
}

function groupBy<T>(items: T[], key: (item: T) => string): Map<string, T[]> {
  const map = new Map<string, T[]>();
  for (const item of items) {
    const k = key(item);
    const list = map.get(k);
    if (list) list.push(item);
    else map.set(k, [item]);
  }
  return map;
}

function variantOrder(v: 'plain' | 'resnet'): number {
  return v === 'plain' ? 0 : 1;
}
