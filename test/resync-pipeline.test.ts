// The resync after a behind period pipelines its fingerprint round trips
// (issue 10, agent/resync-pipeline.ts): while one pulled batch waits for the
// appliance's fingerprints, the next ones are pulled and ask for theirs, and
// the batches still leave in pull order. Through real processes: an agent
// whose tap went behind while the appliance was down resyncs tens of MiB when
// it comes back, with the application writing into the regions being
// resynced, and the replica restores byte-exact.
import path from 'node:path'
import t from 'tap'
import { must, protectedVolume, restore, sha256, startAppliance, tmpdir } from './helpers'

const MiB = 1024 * 1024

t.test('the resync keeps several fingerprint requests in flight and the replica restores byte-exact', async (t) => {
  const dir = tmpdir(t)
  // A 16 MiB ring: the resync may fill half of it, room for two 4 MiB pulls.
  const { img, app, agent, uri } = await protectedVolume(t, dir, { size: 128 * MiB, seed: 31, agentExtra: ['--buffer', '16M'] })
  await app.stop()
  // Nobody to send to: 64 MiB of writes overflow the ring, the tap keeps only its dirty map.
  await must('fio', ['--name=fill', '--ioengine=nbd', `--uri=${uri}`, '--rw=write', '--bs=1M', '--iodepth=4', '--size=64M', '--refill_buffers'], { cwd: dir })
  await startAppliance(t, { data: path.join(dir, 'data'), port: app.port })
  await agent.waitForLog(/resyncing \d+ stale regions/, 60_000)
  // The application goes on writing over the regions being resynced: batches
  // ahead of a request change sectors its reply describes.
  await must('fio', ['--name=over', '--ioengine=nbd', `--uri=${uri}`, '--rw=randwrite', '--bs=4k', '--iodepth=8', '--size=64M', '--io_size=8M', '--refill_buffers'], { cwd: dir })
  t.equal(await agent.stop(), 0, 'the agent drains to the appliance and stops cleanly')

  const fin = agent.logs().find((l) => l.msg === 'final stats' && l.volume === 'vol')
  t.ok(Number(fin?.behindEvents) > 0, `the tap went behind (${fin?.behindEvents} times) and resynced ${fin?.resyncRecords} regions`)
  t.ok(Number(fin?.fingerprintRequests) >= 4, `the resync asked for fingerprints (${fin?.fingerprintRequests} requests)`)
  t.ok(Number(fin?.fingerprintsInFlightMax) > 1, `more than one fingerprint request was in flight at once (at most ${fin?.fingerprintsInFlightMax})`)

  const restored = path.join(dir, 'restored.img')
  await restore(app.address, 'vol', 'latest', restored)
  t.equal(sha256(restored), sha256(img), 'the restored newest point equals the volume')
})
