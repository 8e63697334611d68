// The retention lock (`tidemark appliance --retain-lock DURATION`): history
// younger than DURATION is never folded away, whatever the retention rules,
// a journal size cap, disk pressure, an unpin or an admin's `journal compact`
// ask for — S3 Object Lock's compliance mode, for the journal.
//
// The lock is kept in DATA/retain-lock.json and only ever grows: a start with
// a shorter --retain-lock is refused, and a start without the flag keeps the
// lock the data directory holds. So an admin (or an attacker with an admin's
// certificate, or one who can restart the appliance with other flags) cannot
// shorten history by configuration; only someone who can edit the data
// directory itself can, and they could delete the journal too.
import fs from 'node:fs'
import path from 'node:path'
import { writeFileAtomic } from '../native/atomic-file'
import { TidemarkError } from '../proto/errors'

export interface RetentionLock {
  /** History younger than this many ms is kept. */
  ms: number
  /** The text it was given as (30d), for messages. */
  text: string
  /** When the lock was first set or last lengthened (ISO 8601). */
  since: string
}

const FILE = 'retain-lock.json'

/**
 * The lock this data directory holds, after `requested` (null: the flag was
 * not given). Refuses a requested lock shorter than the one held; records a
 * longer one.
 */
export async function settleRetentionLock(dataDir: string, requested: { ms: number; text: string } | null): Promise<RetentionLock | null> {
  const file = path.join(dataDir, FILE)
  let held: RetentionLock | null = null
  try {
    held = JSON.parse(fs.readFileSync(file, 'utf8')) as RetentionLock
    if (!Number.isFinite(held.ms) || held.ms <= 0) throw new Error('no valid duration')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new TidemarkError('BAD_CONFIG', `${file} cannot be read (${(err as Error).message}): the retention lock it holds is unknown, refusing to start`)
    }
    held = null
  }
  if (!requested) return held
  if (held && requested.ms < held.ms) {
    throw new TidemarkError(
      'USAGE',
      `--retain-lock ${requested.text} is shorter than the lock ${dataDir} holds (${held.text}, since ${held.since}): a retention lock never shortens`
    )
  }
  if (held && requested.ms === held.ms) return held
  const lock = { ms: requested.ms, text: requested.text, since: new Date().toISOString() }
  await writeFileAtomic(file, JSON.stringify(lock, null, 2) + '\n', 0o600)
  return lock
}
