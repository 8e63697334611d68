// The agent's reused payload buffers (agent/payload-buffers.ts): a buffer
// comes back only when given, fits its size class, and at most keepBytes wait.
import t from 'tap'
import { PayloadBuffers } from '../agent/payload-buffers'

const MiB = 1024 * 1024

t.test('a given buffer is taken again by a batch of its size class, and only then', async (t) => {
  const p = new PayloadBuffers(8 * MiB)
  const a = p.take(MiB + 100)
  t.equal(a.length, 2 * MiB, 'sizes are whole MiB')
  const b = p.take(2 * MiB + 100)
  t.not(b, a, 'a buffer not given back is never handed out twice')
  t.equal(b.length, 3 * MiB, 'the next size class')
  p.give(a)
  t.equal(p.take(2 * MiB), a, 'a given buffer is reused')
  p.give(b)
  t.not(p.take(5 * MiB), b, 'a buffer too small for the batch is not reused')
  t.not(p.take(100), b, 'nor one more than twice the size a small batch needs')
  t.equal(p.take(1.5 * MiB), b, 'a batch it fits takes it')
  t.equal(p.allocated, 4, 'four allocations: one reuse')
})

t.test('at most keepBytes wait to be reused', async (t) => {
  const p = new PayloadBuffers(3 * MiB)
  const bufs = [p.take(MiB), p.take(MiB), p.take(MiB), p.take(MiB)]
  for (const b of bufs) p.give(b)
  const again = [p.take(MiB), p.take(MiB), p.take(MiB), p.take(MiB)]
  t.equal(again.filter((b) => bufs.includes(b)).length, 3, 'three of four came back; the fourth was let go')
})
