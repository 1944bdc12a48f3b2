import { describe } from "vitest"
import { runConformanceTests } from "@durable-streams/server-conformance-tests"

describe(`Tidegate Durable Streams`, () => runConformanceTests({ baseUrl: process.env.DS_BASE_URL, longPollTimeoutMs: 5000 }))
