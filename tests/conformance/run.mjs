// Starts the release gateway binary on port 0 with a fresh log directory, runs the
// Durable Streams conformance suite against its inbound port, and stops it.
// Usage: TIDEGATE_BIN=target/release/tidegate node tests/conformance/run.mjs
import { spawn } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join, dirname } from "node:path"
import { fileURLToPath } from "node:url"

const here = dirname(fileURLToPath(import.meta.url))
const bin = process.env.TIDEGATE_BIN ?? join(here, "../../target/release/tidegate")
const logDir = mkdtempSync(join(tmpdir(), "tidegate-ds-"))
const gateway = spawn(bin, [], {
  env: {
    ...process.env,
    INBOUND_PORT: "0",
    API_HTTP_PORT: "0",
    TIDEGATE_INBOUND_HOST: "127.0.0.1",
    TIDEGATE_LOG_DIR: logDir,
    TIDEGATE_INTERNAL_TOKEN: "t",
    MAX_CONNECTIONS_PER_MINUTE: "0",
    TIDEGATE_LOG_DURABILITY: process.env.TIDEGATE_LOG_DURABILITY ?? "buffered",
  },
  stdio: ["ignore", "pipe", "inherit"],
})
const inbound = await new Promise((resolve, reject) => {
  let out = ""
  gateway.stdout.on("data", (d) => {
    out += d
    const m = out.match(/tidegate listening inbound=(\S+)/)
    if (m) resolve(m[1])
  })
  gateway.on("exit", (code) => reject(new Error(`gateway exited with ${code}`)))
})
const vitest = spawn(join(here, "node_modules/.bin/vitest"), ["run", "--root", here, ...process.argv.slice(2)], {
  env: { ...process.env, DS_BASE_URL: `http://${inbound}` },
  stdio: "inherit",
})
const code = await new Promise((resolve) => vitest.on("exit", resolve))
gateway.kill("SIGTERM")
rmSync(logDir, { recursive: true, force: true })
process.exit(code ?? 1)
