// The ImageNet networks of He et al. 2016, Table 1, as data (summary only: this project
// trains CIFAR-10 nets, not these).
//
//   input 224x224x3
//   conv7x7/2, 64 -> BN -> ReLU (112x112), max-pool 3x3/2 (56x56)
//   conv2_x .. conv5_x: 64, 128, 256, 512 filters at 56, 28, 14, 7 (stride 2 where a stage starts)
//     basic block (18, 34):        conv3x3 -> conv3x3                      (width w)
//     bottleneck block (50+):      conv1x1 (w) -> conv3x3 (w) -> conv1x1 (4w)
//   projection shortcuts (option B: 1x1 conv + BN) where the dimensions change
//   global average pool -> 1000-way fully connected
//
// Bottleneck stride: the paper's Caffe models put the stride 2 of a stage's first block
// on its first 1x1 conv; torchvision's ("ResNet v1.5") on the 3x3 conv. Parameters are the
// same either way; multiply-adds differ (torchvision's resnet50: 4.1 G vs the paper's 3.8 G).
// We follow the paper, the figures this tool compares against.
import { convBn, type ConvBn } from './resnet';

export const IMAGENET_ARCHS = ['resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet152'] as const;
export type ImageNetArch = (typeof IMAGENET_ARCHS)[number];

export class ArchError extends Error {}

export function parseArch(value: string): ImageNetArch {
  const v = value.toLowerCase().replace('-', '');
  if (!(IMAGENET_ARCHS as readonly string[]).includes(v))
    throw new ArchError(`--arch must be one of ${IMAGENET_ARCHS.join(', ')}, got '${value}'`);
  return v as ImageNetArch;
}

/** Table 1: block kind and blocks per stage. */
const TABLE1: Record<ImageNetArch, { bottleneck: boolean; blocks: [number, number, number, number] }> = {
  resnet18: { bottleneck: false, blocks: [2, 2, 2, 2] },
  resnet34: { bottleneck: false, blocks: [3, 4, 6, 3] },
  resnet50: { bottleneck: true, blocks: [3, 4, 6, 3] },
  resnet101: { bottleneck: true, blocks: [3, 4, 23, 3] },
  resnet152: { bottleneck: true, blocks: [3, 8, 36, 3] },
};

export interface ImageNetBlock {
  name: string;
  /** Residual branch, in order: two 3x3 convs, or 1x1, 3x3, 1x1. */
  convs: ConvBn[];
  /** Projection shortcut where the dimensions change; otherwise the identity. */
  projection?: ConvBn;
}

export interface ImageNetArchitecture {
  name: ImageNetArch;
  stem: ConvBn;
  /** The 3x3/2 max-pool after the stem: its output size. */
  poolSize: number;
  blocks: ImageNetBlock[];
  features: number;
  classes: number;
}

export function imagenetArchitecture(name: ImageNetArch): ImageNetArchitecture {
  const { bottleneck, blocks: counts } = TABLE1[name];
  const expansion = bottleneck ? 4 : 1;
  const stem = convBn('conv1', 7, 2, 3, 64, 112);
  const blocks: ImageNetBlock[] = [];
  let cin = 64;
  [64, 128, 256, 512].forEach((width, stage) => {
    const size = 56 >> stage;
    const cout = width * expansion;
    for (let b = 0; b < counts[stage]; b++) {
      const stride = stage > 0 && b === 0 ? 2 : 1;
      const n = `conv${stage + 2}_${b + 1}`;
      const convs = bottleneck
        ? [
            convBn(`${n}/a`, 1, stride, cin, width, size),
            convBn(`${n}/b`, 3, 1, width, width, size),
            convBn(`${n}/c`, 1, 1, width, cout, size),
          ]
        : [convBn(`${n}/a`, 3, stride, cin, width, size), convBn(`${n}/b`, 3, 1, width, cout, size)];
      const block: ImageNetBlock = { name: n, convs };
      if (stride !== 1 || cin !== cout) block.projection = convBn(`${n}/proj`, 1, stride, cin, cout, size);
      blocks.push(block);
      cin = cout;
    }
  });
  return { name, stem, poolSize: 56, blocks, features: cin, classes: 1000 };
}

/** Every conv -> BN unit, in forward order. */
export function imagenetConvUnits(arch: ImageNetArchitecture): ConvBn[] {
  const units = [arch.stem];
  for (const b of arch.blocks) {
    units.push(...b.convs);
    if (b.projection) units.push(b.projection);
  }
  return units;
}
