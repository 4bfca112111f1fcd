// `grid <experiment> --emit k8s`: a Kubernetes Indexed Job, one pod per run (completion
// index i = `grid --list` index i; the pod gets it as JOB_COMPLETION_INDEX), printed as
// YAML with the `yaml` library. A custom experiment file travels in a ConfigMap.
import { stringify } from 'yaml';
import type { TaskPlan } from './plan';

export interface K8sOptions {
  image: string;
  resultsClaim: string;
  dataClaim: string;
  parallel?: number;
  /** Pod failures allowed per index before that index is failed (a real error repeats). */
  backoffLimitPerIndex: number;
}

const DATA = '/data';
const RESULTS = '/results';
const CUSTOM = '/experiment';

export function k8sManifest(plan: TaskPlan, o: K8sOptions): string {
  const labels = { app: 'resnet-exp', experiment: plan.jobName };
  const configMap = plan.customFile && {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: { name: `${plan.jobName}-experiment`.slice(0, 63), labels },
    data: { [plan.customFile.name]: plan.customFile.text },
  };
  const experiment = plan.customFile ? `${CUSTOM}/${plan.customFile.name}` : plan.experiment;
  const job = {
    apiVersion: 'batch/v1',
    kind: 'Job',
    metadata: { name: plan.jobName, labels },
    spec: {
      completionMode: 'Indexed',
      completions: plan.runs,
      parallelism: Math.min(o.parallel ?? plan.runs, plan.runs),
      backoffLimitPerIndex: o.backoffLimitPerIndex,
      // A replacement pod starts only when the old one has fully stopped (not while it is
      // terminating), so one run folder never has two writers from here; the run lock
      // covers the rest.
      podReplacementPolicy: 'Failed',
      template: {
        metadata: { labels },
        spec: {
          restartPolicy: 'Never',
          // SIGTERM (eviction, deletion) checkpoints after the current step; this covers the
          // longest step plus an evaluation of the deepest net, measured (README).
          terminationGracePeriodSeconds: plan.stopSeconds,
          containers: [
            {
              name: 'train',
              image: o.image,
              args: [
                'grid',
                experiment,
                '--data-dir',
                DATA,
                '--out',
                RESULTS,
                ...plan.extraFlags,
                '--threads',
                String(plan.cpus),
              ],
              resources: {
                requests: { cpu: String(plan.cpus), memory: `${plan.memoryGiB}Gi` },
                limits: { memory: `${plan.memoryGiB}Gi` },
              },
              volumeMounts: [
                { name: 'data', mountPath: DATA, readOnly: true },
                { name: 'results', mountPath: RESULTS },
                ...(configMap ? [{ name: 'experiment', mountPath: CUSTOM, readOnly: true }] : []),
              ],
            },
          ],
          volumes: [
            { name: 'data', persistentVolumeClaim: { claimName: o.dataClaim, readOnly: true } },
            { name: 'results', persistentVolumeClaim: { claimName: o.resultsClaim } },
            ...(configMap ? [{ name: 'experiment', configMap: { name: configMap.metadata.name } }] : []),
          ],
        },
      },
    },
  };
  const header =
    `# ${plan.title}\n# ${plan.runs} runs, pod i trains run i of \`resnet-exp grid ${plan.experiment} --list\`.\n` +
    `# Apply: kubectl apply -f <this file>; the results claim must be ReadWriteMany when parallelism > 1.\n`;
  const docs = [...(configMap ? [configMap] : []), job].map((d) =>
    stringify(d, { lineWidth: 0, aliasDuplicateObjects: false }),
  );
  return header + docs.join('---\n');
}
