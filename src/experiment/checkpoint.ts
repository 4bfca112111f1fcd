// Checkpoints: the weights, BN running statistics, SGD velocities and the loop state
// (iteration, warm-up, partial interval figures) in one file, written atomically.
//
// Layout: "RESNETX1" | uint32 LE header length | header JSON | float32 LE tensor data.
// The header holds each tensor's name, shape and offset and a sha256 of the data, so a
// truncated or damaged file is detected instead of silently loading garbage.
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { writeFileAtomic } from './files';

const MAGIC = 'RESNETX1';

export class CheckpointError extends Error {}

export interface TensorEntry {
  shape: number[];
  data: Float32Array;
}

interface Header {
  meta: unknown;
  tensors: { name: string; shape: number[]; offset: number; length: number }[];
  sha256: string;
}

export function writeCheckpoint(file: string, meta: unknown, tensors: Map<string, TensorEntry>): void {
  const entries: Header['tensors'] = [];
  let length = 0;
  for (const [name, t] of tensors) {
    entries.push({ name, shape: t.shape, offset: length, length: t.data.length });
    length += t.data.length;
  }
  const payload = new Float32Array(length);
  for (const [i, t] of [...tensors.values()].entries()) payload.set(t.data, entries[i].offset);
  const bytes = new Uint8Array(payload.buffer);
  const header: Header = { meta, tensors: entries, sha256: createHash('sha256').update(bytes).digest('hex') };
  const json = Buffer.from(JSON.stringify(header));
  const prefix = Buffer.alloc(MAGIC.length + 4);
  prefix.write(MAGIC, 0, 'latin1');
  prefix.writeUInt32LE(json.length, MAGIC.length);
  writeFileAtomic(file, Buffer.concat([prefix, json, bytes]));
}

export function readCheckpoint(file: string): { meta: unknown; tensors: Map<string, TensorEntry> } {
  const bad = (why: string) =>
    new CheckpointError(`checkpoint ${file} is unreadable (${why}); delete it or pass --fresh to start the run over`);
  let buf: Buffer;
  try {
    buf = fs.readFileSync(file);
  } catch (e) {
    throw bad((e as Error).message);
  }
  if (buf.length < MAGIC.length + 4 || buf.toString('latin1', 0, MAGIC.length) !== MAGIC)
    throw bad('not a resnet-exp checkpoint');
  const headerLength = buf.readUInt32LE(MAGIC.length);
  const dataStart = MAGIC.length + 4 + headerLength;
  if (dataStart > buf.length) throw bad('truncated header');
  let header: Header;
  try {
    header = JSON.parse(buf.toString('utf8', MAGIC.length + 4, dataStart)) as Header;
  } catch {
    throw bad('damaged header');
  }
  const data = buf.subarray(dataStart);
  const floats = header.tensors.reduce((n, t) => n + t.length, 0);
  if (data.length !== floats * 4) throw bad(`expected ${floats * 4} bytes of tensor data, found ${data.length}`);
  if (createHash('sha256').update(data).digest('hex') !== header.sha256) throw bad('checksum mismatch');
  // Copy into an aligned buffer: a Float32Array view needs a 4-byte aligned offset.
  const payload = new Float32Array(floats);
  new Uint8Array(payload.buffer).set(data);
  const tensors = new Map<string, TensorEntry>();
  for (const t of header.tensors)
    tensors.set(t.name, { shape: t.shape, data: payload.subarray(t.offset, t.offset + t.length) });
  return { meta: header.meta, tensors };
}
