// `tidemark agent --http HOST:PORT`: the agent's routes on the operator
// plane's listener (http-server.ts): /metrics (agent/agent-metrics.ts). The
// agent has no allow-list: over HTTPS any certificate its CA signed may read
// its metrics; without TLS it serves loopback only.
import type { Logger } from 'pino'
import type { Agent } from '../agent/agent'
import { AgentMetrics } from '../agent/agent-metrics'
import type { AgentByteCounters } from '../agent/persisted-counters'
import { HttpServer, metricsReply, notFound, type HttpReply } from './http-server'

export async function startAgentHttp(
  agent: Agent,
  o: { host: string; port: number; tls?: { cert: string; key: string; ca: string }; counters: AgentByteCounters | null; log: Logger }
): Promise<{ close(): Promise<void> }> {
  const metrics = new AgentMetrics(agent, o.counters)
  const router = async (path: string): Promise<HttpReply> =>
    path === '/metrics' ? metricsReply(await metrics.metrics()) : notFound(path, '/metrics')
  const server = await HttpServer.start({ host: o.host, port: o.port, tls: o.tls, name: 'tidemark agent', router, log: o.log })
  return { close: () => server.close() }
}
