// Reference numbers to print beside our own (copied from docs/PROTOCOL.md).
// All are CIFAR-10 test error in percent after the full 64k-iteration schedule,
// option-A shortcuts; they say nothing about a shorter run.

export interface PaperFigure {
  /** Test error (%). */
  testError: number;
  /** Mean and std over seeds, when the source gives them (which std it is, it does not say). */
  mean?: number;
  std?: number;
  /** Where the number comes from, short enough for a table footnote. */
  source: string;
}

export const PAPER_SOURCE = 'He et al. 2016, "Deep Residual Learning for Image Recognition", Table 6 (CIFAR-10)';

/** Table 6 test error of the ResNets by depth. Plain nets are only plotted (Fig. 6 left). */
export const TABLE6_RESNET: Readonly<Record<number, PaperFigure>> = {
  20: { testError: 8.75, source: 'Table 6' },
  32: { testError: 7.51, source: 'Table 6' },
  44: { testError: 7.17, source: 'Table 6' },
  56: { testError: 6.97, source: 'Table 6' },
  // The only depth the paper ran 5 times: 6.43 is the best run, not the mean.
  110: {
    testError: 6.43,
    mean: 6.61,
    std: 0.16,
    source: 'Table 6, best of 5 (mean 6.61±0.16)',
  },
  1202: { testError: 7.93, source: 'Table 6' },
};

/** Parameter counts from Table 6 (millions), option-A ResNets (plain nets have the same). */
export const TABLE6_PARAMS_M: Readonly<Record<number, number>> = {
  20: 0.27,
  32: 0.46,
  44: 0.66,
  56: 0.85,
  110: 1.7,
  1202: 19.4,
};

export const REPRODUCTION_SOURCE = 'public reproduction, 5 seeds, mean ± std of test error (PROTOCOL.md)';

/** A public 5-seed reproduction; it has plain nets too, which the paper only plots. */
export const REPRODUCTION: Readonly<Record<'plain' | 'resnet', Record<number, PaperFigure>>> = {
  plain: {
    20: {
      testError: 9.78,
      mean: 9.78,
      std: 0.13,
      source: '5-seed reproduction',
    },
    56: {
      testError: 12.95,
      mean: 12.95,
      std: 0.22,
      source: '5-seed reproduction',
    },
  },
  resnet: {
    20: {
      testError: 8.51,
      mean: 8.51,
      std: 0.22,
      source: '5-seed reproduction',
    },
    56: { testError: 7.4, mean: 7.4, std: 0.27, source: '5-seed reproduction' },
    110: {
      testError: 7.14,
      mean: 7.14,
      std: 0.2,
      source: '5-seed reproduction',
    },
  },
};

/** The schedule all of the above were measured with. */
export const PAPER_ITERATIONS = 64000;
