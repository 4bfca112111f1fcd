// `resnet-exp summary`: the layer table, parameter count and forward multiply-accumulates.
// Computed from the architecture description alone (no tensors), so it is instant even
// for the 1202-layer net.
import { architecture, convUnits, netName, type NetConfig } from './resnet';

export interface LayerRow {
  name: string;
  op: string;
  output: string;
  params: number;
  macs: number;
}

export interface NetSummary {
  name: string;
  layers: LayerRow[];
  params: number;
  /** Forward multiply-accumulates per image: convolutions and the FC layer. */
  macs: number;
}

export function summarize(cfg: NetConfig): NetSummary {
  const arch = architecture(cfg);
  const layers: LayerRow[] = convUnits(arch).map((u) => ({
    name: u.name,
    op: `conv${u.kernel}x${u.kernel}${u.stride === 2 ? '/2' : ''} + BN`,
    output: `${u.outSize}x${u.outSize}x${u.outChannels}`,
    // conv weights (no bias) + BN scale and shift
    params: u.kernel * u.kernel * u.inChannels * u.outChannels + 2 * u.outChannels,
    macs: u.outSize * u.outSize * u.outChannels * u.kernel * u.kernel * u.inChannels,
  }));
  layers.push({ name: 'pool', op: 'global average pool', output: '64', params: 0, macs: 0 });
  layers.push({
    name: 'fc',
    op: 'fully connected',
    output: `${arch.classes}`,
    params: 64 * arch.classes + arch.classes,
    macs: 64 * arch.classes,
  });
  return {
    name: netName(cfg),
    layers,
    params: layers.reduce((s, l) => s + l.params, 0),
    macs: layers.reduce((s, l) => s + l.macs, 0),
  };
}

export function formatSummary(s: NetSummary): string {
  const fmt = (n: number) => n.toLocaleString('en-US');
  const rows = [
    ['layer', 'op', 'output', 'params', 'MACs'],
    ...s.layers.map((l) => [l.name, l.op, l.output, fmt(l.params), fmt(l.macs)]),
  ];
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  const line = (r: string[]) =>
    r.map((cell, c) => (c >= 3 ? cell.padStart(widths[c]) : cell.padEnd(widths[c]))).join('  ');
  return [
    `${s.name}: ${s.layers.length - 2} conv layers + fc`,
    line(rows[0]),
    ...rows.slice(1).map(line),
    '',
    `parameters: ${fmt(s.params)} (${(s.params / 1e6).toFixed(2)}M)`,
    `forward MACs per image: ${fmt(s.macs)} (${(s.macs / 1e6).toFixed(1)}M)`,
  ].join('\n');
}
