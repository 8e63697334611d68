// A volume's pending generation: the new generation or size an agent
// announced and was refused for (store.ts), kept until an admin accepts it.
//
// It lives in VOLUME_DIR/pending-generation.json, replaced atomically
// (native/atomic-file.ts), so an appliance restart does not forget it: an
// admin can accept after a restart without waiting for the agent to retry.
// The file is only a note of what was asked. It never changes the history by
// itself, and a damaged one is ignored (the agent announces it again on its
// next hello).
import fs from 'node:fs'
import path from 'node:path'
import type { Logger } from 'pino'
import { writeFileAtomic } from '../native/atomic-file'

export const PENDING_FILE = 'pending-generation.json'

/** A new generation or size a refused hello announced. */
export interface PendingGeneration {
  generation: string
  size: number
  agentId: string
  at: string
}

function valid(p: unknown): p is PendingGeneration {
  const o = p as Partial<PendingGeneration> | null
  return (
    typeof o?.generation === 'string' &&
    o.generation.length > 0 &&
    o.generation.length <= 128 &&
    Number.isSafeInteger(o.size) &&
    (o.size as number) > 0 &&
    typeof o.agentId === 'string' &&
    typeof o.at === 'string'
  )
}

/** The pending generation kept in `dir`, if any. */
export async function loadPending(dir: string, log: Logger): Promise<PendingGeneration | undefined> {
  const file = path.join(dir, PENDING_FILE)
  let text: string
  try {
    text = await fs.promises.readFile(file, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') log.warn({ file, err: (err as Error).message }, 'cannot read a pending generation: ignored')
    return undefined
  }
  try {
    const p: unknown = JSON.parse(text)
    if (valid(p)) return { generation: p.generation, size: p.size, agentId: p.agentId, at: p.at }
  } catch {
    // reported below
  }
  log.warn({ file }, 'a pending generation file is damaged: ignored (the agent announces it again)')
  return undefined
}

/** Keeps `p` in `dir` (0600, atomically). */
export async function savePending(dir: string, p: PendingGeneration): Promise<void> {
  await writeFileAtomic(path.join(dir, PENDING_FILE), JSON.stringify(p, null, 2) + '\n', 0o600)
}

/** Forgets the pending generation of `dir`. */
export async function removePending(dir: string): Promise<void> {
  await fs.promises.rm(path.join(dir, PENDING_FILE), { force: true })
}
