// What a run shows while it trains: a progress bar on a terminal, and one plain line per
// evaluation elsewhere (CI logs, nohup, pipes), so that logs stay readable.
import { SingleBar } from 'cli-progress';
import type { RunReporter } from '../experiment/run';

function duration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '?';
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  return h > 0 ? `${h}h${String(m).padStart(2, '0')}m` : `${m}m${String(Math.floor(seconds % 60)).padStart(2, '0')}s`;
}

export function createReporter(stream: NodeJS.WriteStream = process.stderr): RunReporter {
  const tty = stream.isTTY === true;
  let bar: SingleBar | undefined;
  let name = '';
  let total = 0;
  let imagesPerS = 0;
  return {
    log(line) {
      // Over a live bar: clear its line, print, and let the next update redraw it.
      stream.write((bar ? '\r\x1b[2K' : '') + line + '\n');
    },
    start(runName, iterations, done) {
      name = runName;
      total = iterations;
      if (!tty) {
        stream.write(`${name}: training from iteration ${done} to ${iterations}\n`);
        return;
      }
      bar = new SingleBar({
        stream,
        format: `${name} {bar} {value}/{total} | loss {loss} | err {err}% | {ips} img/s | lr {lr} | ETA {eta_h}`,
        hideCursor: true,
        barsize: 24,
        etaBuffer: 50,
      });
      bar.start(iterations, done, { loss: '-', err: '-', ips: '-', lr: '-', eta_h: '?' });
    },
    step(state, info) {
      // A running average keeps the displayed throughput and ETA steady.
      imagesPerS = imagesPerS === 0 ? info.imagesPerS : 0.95 * imagesPerS + 0.05 * info.imagesPerS;
      const iv = state.interval;
      bar?.update(state.iteration, {
        loss: (iv.lossSum / iv.images).toFixed(3),
        err: ((100 * iv.errorSum) / iv.images).toFixed(1),
        ips: imagesPerS.toFixed(0),
        lr: info.lr,
        eta_h: duration(((total - state.iteration) * (iv.images / iv.batches)) / imagesPerS),
      });
    },
    row(row) {
      if (tty) return;
      stream.write(
        `${name} iter ${row.iteration}/${total} epoch ${row.epoch.toFixed(1)} lr ${row.lr} ` +
          `train loss ${row.trainLoss.toFixed(4)} train err ${row.trainError.toFixed(2)}% test err ${row.testError.toFixed(2)}%` +
          (row.valError === null ? '' : ` val err ${row.valError.toFixed(2)}%`) +
          ` ${row.imagesPerS.toFixed(1)} img/s elapsed ${duration(row.elapsedS)}\n`,
      );
    },
    stop() {
      bar?.stop();
      bar = undefined;
    },
  };
}
