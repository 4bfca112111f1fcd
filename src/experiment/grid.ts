// `resnet-exp grid <experiment>`: the runs an experiment file in experiments/ lists, one
// after the other. Finished runs are skipped and interrupted ones resumed, because each
// run is `resnet-exp run` with the same settings (src/experiment/run.ts).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { z } from 'zod';
import { type Recipe, SettingsError, completeRecipe, checkNet, parseShortcut } from './settings';
import type { NetConfig } from '../model/resnet';

/**
 * An experiment file: experiments/<name>.json. Strict: an unknown key (a typo such as
 * "plian", or "iteration" for "iterations") is an error, not silently the paper's default.
 */
const RecipeSchema = z.strictObject({
  iterations: z.int().min(1),
  milestones: z.array(z.int().min(1)),
  lr: z.number().positive(),
  batch: z.int().min(1),
  momentum: z.number().min(0),
  weightDecay: z.number().min(0),
  warmup: z.enum(['auto', 'on', 'off']),
  val: z.int().min(0),
  evalEvery: z.int().min(1),
  clipGradNorm: z.number().positive().optional(),
} satisfies Record<keyof Recipe, z.ZodType>);

const ExperimentSchema = z.strictObject({
  description: z.string(),
  /** Sub-folder of --out for its runs (default: the experiment's name). */
  out: z.string().min(1).optional(),
  /** Overrides of the paper's recipe, shared by all runs. */
  recipe: RecipeSchema.partial().optional(),
  runs: z
    .array(
      z.strictObject({
        depth: z.int().min(1),
        plain: z.boolean().optional(),
        shortcut: z.enum(['A', 'B']).optional(),
        seeds: z.array(z.int().min(0)).min(1).optional(),
      }),
    )
    .min(1),
});
export type ExperimentFile = z.infer<typeof ExperimentSchema>;

/** The first problem as one line naming the key: `runs[1].plian: unrecognized key`. */
function firstIssue(error: z.ZodError): string {
  const issue = error.issues[0];
  const keys = 'keys' in issue && Array.isArray(issue.keys) ? issue.keys : [];
  const where = [...issue.path, ...keys.slice(0, 1)]
    .map((k, i) => (typeof k === 'number' ? `[${k}]` : i === 0 ? String(k) : `.${String(k)}`))
    .join('');
  const what = issue.code === 'unrecognized_keys' ? 'unknown key (see experiments/*.json for the keys)' : issue.message;
  return `${where || '(top level)'}: ${what}`;
}

export interface GridRun {
  net: NetConfig;
  seed: number;
}

export interface Experiment {
  name: string;
  description: string;
  out: string;
  recipe: Recipe;
  runs: GridRun[];
}

export const EXPERIMENTS_DIR = path.resolve(__dirname, '../../experiments');

export function listExperiments(): string[] {
  return fs
    .readdirSync(EXPERIMENTS_DIR)
    .filter((f) => f.endsWith('.json'))
    .map((f) => f.replace(/\.json$/, ''))
    .sort();
}

/** Reads an experiment by name (from experiments/) or by path. */
export function loadExperiment(nameOrPath: string): Experiment {
  const file = fs.existsSync(nameOrPath)
    ? nameOrPath
    : path.join(EXPERIMENTS_DIR, `${nameOrPath.replace(/\.json$/, '')}.json`);
  if (!fs.existsSync(file)) {
    throw new SettingsError(`no experiment '${nameOrPath}'; available: ${listExperiments().join(', ')}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new SettingsError(`${file} is not valid JSON: ${(e as Error).message.split('\n')[0]}`);
  }
  const parsed = ExperimentSchema.safeParse(json);
  if (!parsed.success) throw new SettingsError(`${file}: ${firstIssue(parsed.error)}`);
  const raw = parsed.data;
  const name = path.basename(file, '.json');
  const runs: GridRun[] = [];
  for (const r of raw.runs) {
    const net = checkNet({
      depth: r.depth,
      plain: r.plain === true,
      shortcut: parseShortcut(r.shortcut ?? 'A'),
    });
    for (const seed of new Set(r.seeds ?? [1])) runs.push({ net, seed });
  }
  return {
    name,
    description: raw.description,
    out: raw.out ?? name,
    recipe: completeRecipe(raw.recipe ?? {}),
    runs,
  };
}
