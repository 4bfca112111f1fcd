# The image `resnet-exp grid <experiment> --emit k8s` names by default (resnet-exp:<version>):
#   docker build -t resnet-exp:0.1.0 .
#   docker tag resnet-exp:0.1.0 <registry>/resnet-exp:0.1.0 && docker push <registry>/resnet-exp:0.1.0
# then --emit k8s --image <registry>/resnet-exp:0.1.0. Its entry point is the CLI:
#   docker run --rm -v $PWD/data:/data -v $PWD/results:/results resnet-exp:0.1.0 \
#     run --depth 20 --data-dir /data/cifar-10-batches-bin --out /results
# The data set is not in the image: it comes from a volume (the k8s manifest's data claim).

# Build: compilers, oneDNN headers and the dev dependencies (TypeScript) live here only.
FROM node:20-bookworm AS build
RUN apt-get update \
  && apt-get install -y --no-install-recommends libdnnl-dev \
  && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: the one install script that matters is ours (the native engine), and it
# needs the sources: it runs below.
RUN npm ci --ignore-scripts
COPY . .
# The engine's build never fails an install (it falls back), so check that it is there.
# Without OpenMPI's headers it builds without MPI: one process per pod.
RUN node scripts/build-native.js && npx tsc -p tsconfig.json \
  && test -f build/Release/resnet_native.node && test -f dist/cli/main.js \
  && npm prune --omit=dev

# Run: Node 20 and oneDNN's runtime library (libdnnl2 brings libgomp1, which the engine's
# OpenMP threads use), the built project, nothing else.
FROM node:20-bookworm-slim
RUN apt-get update \
  && apt-get install -y --no-install-recommends libdnnl2 libgomp1 \
  && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /app/package.json ./
COPY --from=build /app/bin ./bin
COPY --from=build /app/dist ./dist
COPY --from=build /app/build/Release/resnet_native.node ./build/Release/resnet_native.node
COPY --from=build /app/experiments ./experiments
COPY --from=build /app/node_modules ./node_modules
# Root, as most clusters' shared volumes expect of a pod that writes results; set
# securityContext.runAsUser (and a volume that user may write) to run it as another user.
# Node is PID 1 and handles SIGTERM itself: it checkpoints after the current step and exits.
ENTRYPOINT ["node", "/app/bin/resnet-exp"]
CMD ["--help"]
