// `resnet-exp grid <experiment>`: the runs an experiment file in experiments/ lists, one
// after the other. Finished runs are skipped and interrupted ones resumed, because each
// run is `resnet-exp run` with the same settings (src/experiment/run.ts).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { type Recipe, SettingsError, completeRecipe, checkNet, integer, parseShortcut } from './settings';
import type { NetConfig } from '../model/resnet';

/** An experiment file: experiments/<name>.json. */
export interface ExperimentFile {
  description: string;
  /** Sub-folder of --out for its runs (default: the experiment's name). */
  out?: string;
  /** Overrides of the paper's recipe, shared by all runs. */
  recipe?: Partial<Recipe>;
  runs: { depth: number; plain?: boolean; shortcut?: 'A' | 'B'; seeds?: number[] }[];
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
  let raw: ExperimentFile;
  try {
    raw = JSON.parse(fs.readFileSync(file, 'utf8')) as ExperimentFile;
  } catch (e) {
    throw new SettingsError(`${file} is not valid JSON: ${(e as Error).message.split('\n')[0]}`);
  }
  if (!Array.isArray(raw.runs) || raw.runs.length === 0) throw new SettingsError(`${file} lists no runs`);
  const name = path.basename(file, '.json');
  const runs: GridRun[] = [];
  for (const r of raw.runs) {
    const net = checkNet({
      depth: integer('depth', r.depth, 1),
      plain: r.plain === true,
      shortcut: parseShortcut(r.shortcut ?? 'A'),
    });
    for (const seed of r.seeds ?? [1]) runs.push({ net, seed: integer('seed', seed, 0) });
  }
  return {
    name,
    description: raw.description ?? '',
    out: raw.out ?? name,
    recipe: completeRecipe(raw.recipe ?? {}),
    runs,
  };
}
