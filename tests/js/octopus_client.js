// Octopus Deploy's own TypeScript client against a live node, as a script
// written for Octopus Server would use it. tests/test_octopus_client.py runs
// it and checks what it prints (one JSON document on stdout).
//
// node octopus_client.js URL API_KEY PACKAGE_FILE QUICK_TASK_ID LONG_TASK_ID
"use strict";

const {
  Client, PackageRepository, ServerTaskRepository, ServerTaskWaiter, SpaceServerTaskRepository,
} = require("@octopusdeploy/api-client");

async function main() {
  const [instanceURL, apiKey, packageFile, quickId, longId] = process.argv.slice(2);
  const client = await Client.create({ instanceURL, apiKey, userAgentApp: "octonodes-tests" });
  const result = { serverVersion: client.serverInformation.version };

  const packages = new PackageRepository(client, "Default");
  await packages.push([packageFile]);
  result.pushed = true;
  try {
    await packages.push([packageFile]); // FailIfExists, the default
    result.secondPush = "succeeded";
  } catch (error) {
    result.secondPush = String(error.message || error);
  }

  const tasks = new SpaceServerTaskRepository(client, "Default");
  result.task = await tasks.getById(quickId);
  const waiter = new ServerTaskWaiter(client, "Default");
  result.waited = await waiter.waitForServerTaskToComplete(quickId, 100, 30000);
  result.raw = await tasks.getRaw(quickId);

  // The long task: wait for it while it is cancelled through the API.
  const waiting = waiter.waitForServerTaskToComplete(longId, 100, 30000);
  await new ServerTaskRepository(client).cancel(longId);
  result.canceled = await waiting;

  try {
    await tasks.getById("ServerTasks-999999");
    result.unknown = "found";
  } catch (error) {
    result.unknown = { status: error.StatusCode, message: error.message };
  }
  process.stdout.write(JSON.stringify(result));
  process.exit(0); // without waiting for idle keep-alive connections to close
}

main().catch((error) => {
  process.stderr.write(`Error: ${error && error.stack ? error.stack : error}\n`);
  process.exit(1);
});
