// Checkpoints: the weights, BN running statistics, SGD velocities and the loop state
// (iteration, warm-up, partial interval figures) in one file, written atomically.
//
// Layout (v2): "RESNETX2" | uint32 LE header length | header JSON | float32 LE tensor data |
// sha256 of everything before it. The checksum covers the header too, so an edited
// iteration or identity is detected, not only damaged weights. Files of v1 ("RESNETX1",
// sha256 of the data only, in the header) still load, so older runs keep resuming.
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { writeFileAtomic } from './files';

const MAGIC_V1 = 'RESNETX1';
const MAGIC = 'RESNETX2';
const PREFIX = MAGIC.length + 4;
const SHA_BYTES = 32;

export class CheckpointError extends Error {}

export interface TensorEntry {
  shape: number[];
  data: Float32Array;
}

interface Header {
  meta: unknown;
  tensors: { name: string; shape: number[]; offset: number; length: number }[];
  /** v1 only: sha256 of the tensor data. */
  sha256?: string;
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
  const header: Header = { meta, tensors: entries };
  const json = Buffer.from(JSON.stringify(header));
  const prefix = Buffer.alloc(PREFIX);
  prefix.write(MAGIC, 0, 'latin1');
  prefix.writeUInt32LE(json.length, MAGIC.length);
  const body = Buffer.concat([prefix, json, new Uint8Array(payload.buffer)]);
  writeFileAtomic(file, Buffer.concat([body, createHash('sha256').update(body).digest()]));
}

function badFile(file: string) {
  return (why: string) =>
    new CheckpointError(
      `${file} is unreadable (${why}); restore it from a backup, or pass --fresh to start the run over`,
    );
}

/** Magic, header and where the data starts; no checksum check (see readCheckpoint). */
function parseHeader(file: string, buf: Buffer): { version: 1 | 2; header: Header; dataStart: number } {
  const bad = badFile(file);
  const magic = buf.length >= PREFIX ? buf.toString('latin1', 0, MAGIC.length) : '';
  if (magic !== MAGIC && magic !== MAGIC_V1) throw bad('not a resnet-exp checkpoint');
  const headerLength = buf.readUInt32LE(MAGIC.length);
  const dataStart = PREFIX + headerLength;
  if (dataStart > buf.length) throw bad('truncated header');
  try {
    const header = JSON.parse(buf.toString('utf8', PREFIX, dataStart)) as Header;
    if (!Array.isArray(header.tensors)) throw new Error('no tensor list');
    return { version: magic === MAGIC ? 2 : 1, header, dataStart };
  } catch {
    throw bad('damaged header');
  }
}

/** The header's meta only, unchecked: for a quick status, never for resuming. */
export function peekCheckpointMeta(file: string): unknown {
  const fd = fs.openSync(file, 'r');
  try {
    const prefix = Buffer.alloc(PREFIX);
    fs.readSync(fd, prefix, 0, PREFIX, 0);
    const length = prefix.length === PREFIX ? prefix.readUInt32LE(MAGIC.length) : 0;
    const buf = Buffer.alloc(PREFIX + length);
    fs.readSync(fd, buf, 0, buf.length, 0);
    return parseHeader(file, buf).header.meta;
  } finally {
    fs.closeSync(fd);
  }
}

export function readCheckpoint(file: string): { meta: unknown; tensors: Map<string, TensorEntry> } {
  const bad = badFile(file);
  let buf: Buffer;
  try {
    buf = fs.readFileSync(file);
  } catch (e) {
    throw bad((e as Error).message);
  }
  const { version, header, dataStart } = parseHeader(file, buf);
  const floats = header.tensors.reduce((n, t) => n + t.length, 0);
  const dataEnd = dataStart + floats * 4;
  const expected = version === 2 ? dataEnd + SHA_BYTES : dataEnd;
  if (buf.length !== expected) throw bad(`expected ${expected} bytes, found ${buf.length}`);
  const data = buf.subarray(dataStart, dataEnd);
  const ok =
    version === 2
      ? createHash('sha256').update(buf.subarray(0, dataEnd)).digest().equals(buf.subarray(dataEnd))
      : createHash('sha256').update(data).digest('hex') === header.sha256;
  if (!ok) throw bad('checksum mismatch');
  // Copy into an aligned buffer: a Float32Array view needs a 4-byte aligned offset.
  const payload = new Float32Array(floats);
  new Uint8Array(payload.buffer).set(data);
  const tensors = new Map<string, TensorEntry>();
  for (const t of header.tensors)
    tensors.set(t.name, { shape: t.shape, data: payload.subarray(t.offset, t.offset + t.length) });
  return { meta: header.meta, tensors };
}
