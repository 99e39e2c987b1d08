// The client matrix's scenario for npm @azure/batch 10.x (BatchServiceClient): prints a JSON summary.
// Run with NODE_PATH at the client's node_modules: KILN_ENDPOINT, KILN_ACCOUNT_NAME, KILN_ACCOUNT_KEY, SCENARIO_ID.
const { BatchServiceClient, BatchSharedKeyCredentials } = require("@azure/batch");

const id = process.env.SCENARIO_ID;
const pool = `${id}-pool`;
const job = `${id}-job`;
const autoPool = `${id}-auto`;
const image = { publisher: "canonical", offer: "0001-com-ubuntu-server-jammy", sku: "22_04-lts" };
const client = new BatchServiceClient(
  new BatchSharedKeyCredentials(process.env.KILN_ACCOUNT_NAME, process.env.KILN_ACCOUNT_KEY),
  process.env.KILN_ENDPOINT,
);

async function wait(condition, what, timeout = 600000) { // generous: a loaded machine starts nodes slowly
  const deadline = Date.now() + timeout;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

async function text(stream) {
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  return Buffer.concat(chunks).toString();
}

async function main() {
  const virtualMachineConfiguration = { imageReference: image, nodeAgentSKUId: "batch.node.ubuntu 22.04" };
  await client.pool.add({
    id: pool,
    vmSize: "standard_d2s_v3",
    virtualMachineConfiguration,
    targetDedicatedNodes: 1,
    taskSlotsPerNode: 2,
  });
  await wait(async () => (await client.computeNode.list(pool)).map((n) => n.state).join() === "idle", "an idle node");
  const nodeCounts = await client.account.listPoolNodeCounts({
    accountListPoolNodeCountsOptions: { filter: `poolId eq '${pool}'` },
  });
  const sameImage = (i) => ["publisher", "offer", "sku"].every((k) => i.imageReference[k].toLowerCase() === image[k]);
  const images = (await client.account.listSupportedImages()).filter(sameImage).map((i) => i.nodeAgentSKUId).sort();
  const [node] = await client.computeNode.list(pool);
  const nodeState = async (state) => (await client.computeNode.get(pool, node.id)).state === state;
  await client.computeNode.disableScheduling(pool, node.id, { nodeDisableSchedulingOption: "taskcompletion" });
  const scheduling = [(await client.computeNode.get(pool, node.id)).schedulingState];
  await wait(() => nodeState("offline"), "the node to be offline");
  await client.computeNode.enableScheduling(pool, node.id);
  scheduling.push((await client.computeNode.get(pool, node.id)).schedulingState);
  await wait(() => nodeState("idle"), "the node to be idle again");
  await client.pool.add({
    id: autoPool,
    vmSize: "standard_d2s_v3",
    virtualMachineConfiguration,
    enableAutoScale: true,
    autoScaleFormula: "$TargetDedicatedNodes=0;",
  });
  const autoscale = {
    created: (await client.pool.get(autoPool)).autoScaleRun.results,
    evaluated: (await client.pool.evaluateAutoScale(autoPool, "$TargetDedicatedNodes=1;")).results,
  };
  await client.pool.deleteMethod(autoPool);
  await client.job.add({
    id: job,
    poolInfo: { poolId: pool },
    jobPreparationTask: { commandLine: "/bin/sh -c 'echo prep'" },
    jobReleaseTask: { commandLine: "/bin/sh -c 'echo release'" },
  });
  const outputUrl = process.env.KILN_OUTPUT_URL; // a container SAS URL the test made in Azurite (none without it)
  const upload = {
    filePattern: "../stdout.txt",
    destination: { container: { containerUrl: outputUrl, path: `${id}/stdout.txt` } },
    uploadOptions: { uploadCondition: "taskcompletion" },
  };
  await client.task.add(job, {
    id: "single",
    commandLine: "/bin/sh -c 'echo hello from single'",
    outputFiles: outputUrl ? [upload] : undefined,
  });
  const added = await client.task.addCollection(
    job,
    [0, 1, 2].map((i) => ({ id: `many${i}`, commandLine: `/bin/sh -c 'exit ${i}'` })),
  );
  await wait(async () => (await client.task.list(job)).every((t) => t.state === "completed"), "the tasks");
  const tasks = Object.fromEntries((await client.task.list(job)).map((t) => [t.id, t.executionInfo.exitCode]));
  const counts = (await client.job.getTaskCounts(job)).taskCounts;
  const jobStats = (await client.job.get(job, { jobGetOptions: { expand: "stats" } })).stats;
  const file = await text((await client.file.getFromTask(job, "single", "stdout.txt")).readableStreamBody);
  await client.job.terminate(job);
  await wait(async () => (await client.job.get(job)).state === "completed", "the job to complete");
  const released = async () => (await client.job.listPreparationAndReleaseTaskStatus(job));
  await wait(async () => (await released()).every((s) => s.jobReleaseTaskExecutionInfo), "the release task");
  const status = (await released()).map((s) => ({
    prep: s.jobPreparationTaskExecutionInfo.exitCode,
    release: s.jobReleaseTaskExecutionInfo.exitCode,
  }));
  await client.job.deleteMethod(job);
  await client.pool.deleteMethod(pool);
  console.log(
    JSON.stringify({
      added: added.value.map((r) => r.status).sort(),
      tasks,
      counts: { succeeded: counts.succeeded, failed: counts.failed, completed: counts.completed },
      file,
      status,
      stats: {
        succeeded: Number(jobStats.numSucceededTasks),
        failed: Number(jobStats.numFailedTasks),
        retries: Number(jobStats.numTaskRetries),
      },
      nodeCounts: nodeCounts.map((c) => ({ idle: c.dedicated.idle, total: c.dedicated.total })),
      images,
      scheduling,
      autoscale,
    }),
  );
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
