// The initial copy of a thin disk: the tap reads only the regions that hold
// data (SEEK_DATA), sends each hole as a 32-byte ZERO record standing for its
// RESYNC record, and MicroScan drops those the new replica already reads as
// zeroes. The replica still ends byte-exact.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { restore, sha256, startAgent, startAppliance, tmpdir } from './helpers'

const MiB = 1024 * 1024
const SIZE = 256 * MiB
const REGIONS = SIZE / (64 * 1024)

t.test('a thin 256 MiB disk with 3 MiB of data: holes are not read, nothing for them is journaled, the copy is exact', async (t) => {
  const dir = tmpdir(t)
  const img = path.join(dir, 'thin.img')
  const fd = fs.openSync(img, 'w')
  fs.ftruncateSync(fd, SIZE)
  const data = Buffer.alloc(MiB)
  for (let i = 0; i < data.length; i++) data[i] = (i * 7 + 3) & 0xff
  for (const at of [0, 100 * MiB + 4096, 255 * MiB]) fs.writeSync(fd, data, 0, data.length, at)
  fs.closeSync(fd)
  const app = await startAppliance(t, { data: path.join(dir, 'data') })
  const agent = await startAgent(t, { state: path.join(dir, 'state'), sock: path.join(dir, 'nbd.sock'), volumes: { vol: img }, extra: ['--appliance', app.address] })
  await app.waitForLog(/initial copy complete/, 120_000)
  t.equal(await agent.stop(), 0, 'the agent stops cleanly')
  const fin = agent.logs().find((l) => l.msg === 'final stats' && l.volume === 'vol') as Record<string, number>
  // The data touches 4 regions per MiB written (plus one where a write straddles): at most 12 of 4096 are read.
  const dataRegions = 3 * 16 + 1
  t.equal(fin.resyncRecords, REGIONS, 'every region was copied')
  t.ok(fin.resyncHoles >= REGIONS - dataRegions, `and ${fin.resyncHoles} of them were holes, not read`)
  t.equal(fin.changedBytes, 3 * MiB, 'only the data was sent')
  const st = JSON.parse((await import('node:child_process')).execFileSync(process.execPath, [path.join(__dirname, '..', 'bin', 'tidemark.js'), 'stats', '--appliance', app.address, '--volume', 'vol', '--json'], { encoding: 'utf8' }))
  const records = Number(st.volumes[0].records)
  t.ok(records < 100, `the journal holds ${records} records, none for the holes (a new replica reads them as zeroes already)`)
  const out = path.join(dir, 'restored.img')
  await restore(app.address, 'vol', 'latest', out)
  t.equal(sha256(out), sha256(img), 'the replica is byte-exact')
})
