// The Prometheus registry each tidemark process starts from: prom-client's
// process defaults (CPU, memory, event loop lag, file descriptors) and
// tidemark_build_info{version,role} = 1, the conventional way to put the
// version on a dashboard. The agent's and the appliance's own metrics
// (agent/agent-metrics.ts, appliance/appliance-metrics.ts) register on it.
// Names follow prometheus.io: base units, _total for counters, `volume` the
// only per-volume label (never a TimeMark: that would be a series per mark).
import fs from 'node:fs'
import path from 'node:path'
import { collectDefaultMetrics, Gauge, Registry } from 'prom-client'

/** The package's version, from the package.json above this file (source or dist/). */
export function tidemarkVersion(): string {
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    try {
      const p = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string }
      if (p.name === 'tidemark' && p.version) return p.version
    } catch {
      // not here: one level up
    }
    if (path.dirname(dir) === dir) return 'unknown'
  }
}

export function metricsRegistry(role: 'agent' | 'appliance'): Registry {
  const registry = new Registry()
  collectDefaultMetrics({ register: registry })
  const info = new Gauge({
    name: 'tidemark_build_info',
    help: 'Always 1; the labels say which tidemark this is and what it runs as.',
    labelNames: ['version', 'role'],
    registers: [registry],
  })
  info.set({ version: tidemarkVersion(), role }, 1)
  return registry
}

/**
 * Sets a counter to an absolute value read from a stats object (a collect()
 * callback): the counters tidemark keeps never go backwards, so this is a
 * counter to Prometheus all the same.
 */
export function setCounter(c: { reset(): void; inc(labels: Record<string, string>, v: number): void }, rows: Array<[Record<string, string>, number]>): void {
  c.reset()
  for (const [labels, v] of rows) c.inc(labels, Math.max(0, v))
}
