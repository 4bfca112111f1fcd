// `resnet-exp summary`: the layer table, parameter count and forward multiply-accumulates.
// Computed from the architecture description alone (no tensors), so it is instant even
// for the 1202-layer net.
import { imagenetArchitecture, imagenetConvUnits, type ImageNetArch } from './imagenet';
import { architecture, convUnits, netName, type ConvBn, type NetConfig } from './resnet';

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
  /**
   * Forward multiply-accumulates per image: convolutions and the FC layer (BN, ReLU,
   * additions and pooling are not counted, as in the paper's FLOPs).
   */
  macs: number;
}

function convRow(u: ConvBn): LayerRow {
  return {
    name: u.name,
    op: `conv${u.kernel}x${u.kernel}${u.stride === 2 ? '/2' : ''} + BN`,
    output: `${u.outSize}x${u.outSize}x${u.outChannels}`,
    // conv weights (no bias) + BN scale and shift
    params: u.kernel * u.kernel * u.inChannels * u.outChannels + 2 * u.outChannels,
    macs: u.outSize * u.outSize * u.outChannels * u.kernel * u.kernel * u.inChannels,
  };
}

function headRows(features: number, classes: number): LayerRow[] {
  return [
    { name: 'pool', op: 'global average pool', output: `${features}`, params: 0, macs: 0 },
    {
      name: 'fc',
      op: 'fully connected',
      output: `${classes}`,
      params: features * classes + classes,
      macs: features * classes,
    },
  ];
}

function totals(name: string, layers: LayerRow[]): NetSummary {
  return {
    name,
    layers,
    params: layers.reduce((s, l) => s + l.params, 0),
    macs: layers.reduce((s, l) => s + l.macs, 0),
  };
}

export function summarize(cfg: NetConfig): NetSummary {
  const arch = architecture(cfg);
  return totals(netName(cfg), [...convUnits(arch).map(convRow), ...headRows(64, arch.classes)]);
}

/** The ImageNet nets of Table 1 (224x224 input). */
export function summarizeImageNet(name: ImageNetArch): NetSummary {
  const arch = imagenetArchitecture(name);
  const [stem, ...rest] = imagenetConvUnits(arch).map(convRow);
  const pool: LayerRow = {
    name: 'maxpool',
    op: 'max-pool 3x3/2',
    output: `${arch.poolSize}x${arch.poolSize}x${arch.stem.outChannels}`,
    params: 0,
    macs: 0,
  };
  return totals(name, [stem, pool, ...rest, ...headRows(arch.features, arch.classes)]);
}

export function formatSummary(s: NetSummary): string {
  const fmt = (n: number) => n.toLocaleString('en-US');
  const rows = [
    ['layer', 'op', 'output', 'params', 'MACs'],
    ...s.layers.map((l) => [l.name, l.op, l.output, fmt(l.params), fmt(l.macs)]),
  ];
  const convs = s.layers.filter((l) => l.op.startsWith('conv'));
  const projections = convs.filter((l) => l.name.endsWith('/proj')).length;
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  const line = (r: string[]) =>
    r.map((cell, c) => (c >= 3 ? cell.padStart(widths[c]) : cell.padEnd(widths[c]))).join('  ');
  return [
    `${s.name}: ${convs.length - projections} conv layers${projections ? ` (+ ${projections} projection shortcuts)` : ''} + fc`,
    line(rows[0]),
    ...rows.slice(1).map(line),
    '',
    `parameters: ${fmt(s.params)} (${(s.params / 1e6).toFixed(2)}M)`,
    `forward MACs per image: ${fmt(s.macs)} (${s.macs >= 1e9 ? `${(s.macs / 1e9).toFixed(2)}G` : `${(s.macs / 1e6).toFixed(1)}M`})`,
  ].join('\n');
}
