// Clearing a path for a new unix socket, shared by the agent's control socket
// and the appliance's unix listener (both depend on native/, never on each
// other). Only a stale socket is replaced: lstat, not stat, so a symbolic
// link there (to a socket or to anything) is refused and left alone, as is a
// regular file or a socket some process still answers on.
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { TidemarkError } from '../proto/errors'

/** What answers on this unix socket: a server, nobody (ECONNREFUSED: left by a process that died), or something else (its errno). */
function probe(file: string): Promise<'live' | 'stale' | string> {
  return new Promise((resolve) => {
    const s = net.connect(file)
    s.once('connect', () => {
      s.destroy()
      resolve('live')
    })
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code === 'ECONNREFUSED' ? 'stale' : e.code ?? e.message))
  })
}

/**
 * Makes `file` free for a new socket: nothing there, or a stale socket
 * (removed). Anything else is refused with `code`, the message starting with
 * `what` (the option and path, e.g. "--control /run/a.sock") and naming
 * `user` when a live process holds it.
 */
export async function clearSocketPath(file: string, code: string, what: string, user: string): Promise<void> {
  let st: fs.Stats
  try {
    st = fs.lstatSync(file)
  } catch {
    return
  }
  if (!st.isSocket()) {
    const kind = st.isSymbolicLink() ? 'a symbolic link' : st.isFile() ? 'a regular file' : 'not a socket'
    throw new TidemarkError(code, `${what} exists and is ${kind}: refusing to replace it`)
  }
  const p = await probe(file)
  if (p === 'live') throw new TidemarkError(code, `${what} is in use by ${user}`)
  if (p !== 'stale') throw new TidemarkError(code, `${what} exists and cannot be probed (${p}): refusing to replace it`)
  fs.rmSync(file)
}

/**
 * Binds a socket with `bind(at)` inside a fresh 0700 directory beside `file`
 * (nobody can connect to it, or swap it, before its mode is set), gives it
 * `mode`, and renames it to `file`, which the caller has cleared
 * (clearSocketPath): it appears there complete, with its mode. Returns its
 * inode, so that only this socket is removed later. For a socket wider than
 * 0600, which a mode set before bind cannot give under umask 077.
 */
export async function publishSocket(file: string, mode: number, bind: (at: string) => Promise<void> | void): Promise<number> {
  const staging = fs.mkdtempSync(path.join(path.dirname(file), '.tidemark-sock-'))
  try {
    const at = path.join(staging, 's')
    await bind(at)
    fs.chmodSync(at, mode)
    fs.renameSync(at, file)
    return fs.lstatSync(file).ino
  } finally {
    fs.rmSync(staging, { recursive: true, force: true })
  }
}
