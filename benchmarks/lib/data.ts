// Test data for benchmarks: deterministic pseudo-random bytes (the same
// seed gives the same image in every run), sparse and fully written files,
// and file digests.
import crypto from 'node:crypto'
import fs from 'node:fs'
import { MiB } from './env'

/** xorshift32 over the buffer. */
export function fillRandom(buf: Buffer, seed: number): void {
  let x = seed >>> 0 || 1
  for (let i = 0; i + 4 <= buf.length; i += 4) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    buf.writeUInt32LE(x >>> 0, i)
  }
}

/** A file of `size` bytes, all holes. */
export function sparseFile(file: string, size: number): void {
  const fd = fs.openSync(file, 'w')
  fs.ftruncateSync(fd, size)
  fs.closeSync(fd)
}

/** A file of `size` bytes of seeded random data (nothing a zero-skipping copy could skip). */
export function randomImage(file: string, size: number, seed: number): void {
  const fd = fs.openSync(file, 'w')
  const chunk = Buffer.alloc(4 * MiB)
  for (let off = 0, i = 0; off < size; off += chunk.length, i++) {
    fillRandom(chunk, seed * 7919 + i)
    fs.writeSync(fd, chunk, 0, Math.min(chunk.length, size - off), off)
  }
  fs.closeSync(fd)
}

export function sha256File(file: string): string {
  const h = crypto.createHash('sha256')
  const fd = fs.openSync(file, 'r')
  const buf = Buffer.alloc(4 * MiB)
  try {
    for (;;) {
      const n = fs.readSync(fd, buf, 0, buf.length, null)
      if (n === 0) break
      h.update(buf.subarray(0, n))
    }
  } finally {
    fs.closeSync(fd)
  }
  return h.digest('hex')
}
