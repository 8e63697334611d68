// The agent over mutual TLS: with a certificate the appliance's CA signed and
// an allow-list entry it replicates byte-exact; with a certificate from
// another CA, or one not allowed the volume, it gets nothing in, says so once
// at error level with the appliance's reason, and keeps retrying.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { BIN, have, makeImage, makePki, must, nbdUri, restore, run, sha256, sleep, startAgent, startAppliance, tlsArgs, tmpdir, waitFor } from './helpers'

const MiB = 1024 * 1024

const tls = tlsArgs

t.test('mutual TLS: the allowed agent replicates byte-exact; a refused one logs why once and keeps retrying', { skip: !have('openssl') && 'openssl is not installed' }, async (t) => {
  const dir = tmpdir(t)
  const pki = path.join(dir, 'pki')
  const rogue = path.join(dir, 'rogue')
  await makePki(pki, ['appliance', 'agent-a', 'agent-b', 'reader', 'boss'])
  await makePki(rogue, ['agent-a'])
  // The rogue agent trusts our CA but presents a certificate from its own.
  fs.copyFileSync(path.join(pki, 'ca.pem'), path.join(rogue, 'ca.pem'))
  const app = await startAppliance(t, { data: path.join(dir, 'data'), extra: [...tls(pki, 'appliance'), '--allow', 'agent-a=vol-a', '--allow', 'reader=read:vol-a', '--allow', 'boss=admin:*'] })

  const img = path.join(dir, 'a.img')
  makeImage(img, 8 * MiB, 5)
  const sock = path.join(dir, 'a.sock')
  const good = await startAgent(t, { state: path.join(dir, 'sa'), sock, volumes: { 'vol-a': img }, extra: ['--appliance', app.address, ...tls(pki, 'agent-a'), '--stats-interval', '0.2'] })
  await must('qemu-io', ['-f', 'raw', '-c', 'write -P 0x42 1M 64k', '-c', 'flush', nbdUri(sock, 'vol-a')])
  await app.waitForLog(/initial copy complete/)
  await waitFor(() => good.logs().some((l) => l.msg === 'stats' && l.dataChannel === true), 'a stats line with the data channel open')
  t.pass('the batches travel on the data channel, over mutual TLS too')
  t.notOk(good.logs().some((l) => /data channel/.test(String(l.msg))), 'with no complaint from the agent')
  t.equal(await good.stop(), 0, 'the agent with an allowed certificate drains and stops')
  const out = path.join(dir, 'a.restored')
  // The agent's certificate writes; restoring takes one with the read role.
  await restore(app.address, 'vol-a', 'latest', out, tls(pki, 'reader'))
  t.equal(sha256(out), sha256(img), 'byte-exact over mutual TLS')

  // agent-b is signed by the CA but may not write vol-b.
  const imgB = path.join(dir, 'b.img')
  makeImage(imgB, MiB, null)
  const denied = await startAgent(t, { state: path.join(dir, 'sb'), sock: path.join(dir, 'b.sock'), volumes: { 'vol-b': imgB }, extra: ['--appliance', app.address, ...tls(pki, 'agent-b'), '--stats-interval', '0.2'] })
  const line = await denied.waitForLog(/the appliance ended the replication stream/)
  t.equal(line.level, 50, 'logged at error level')
  t.equal(line.code, 'PERMISSION_DENIED')
  t.match(String(line.msg), /may not write volume vol-b/, 'with the appliance\'s reason')
  await retried(denied, 'vol-b', 3)
  const again = denied.logs().filter((l) => /ended the replication stream/.test(String(l.msg)))
  t.equal(again.length, 1, 'the same refusal is logged once, however often it is retried')
  // The appliance logs the refusal once per identity and operation, and counts each.
  // Refusals of a volume the appliance does not hold are counted appliance-wide: only an admin of every volume sees them.
  const st = await run(process.execPath, [BIN, 'stats', '--appliance', app.address, '--json', ...tls(pki, 'boss')])
  const attaches = Number(JSON.parse(st.stdout).appliance.rejected.PERMISSION_DENIED ?? 0)
  t.ok(attaches >= 2, `the agent kept retrying with backoff (${attaches} attempts refused)`)
  t.equal(await denied.stop(), 0, 'it still stops cleanly')

  // A certificate from another CA gets no connection at all.
  const rogueAgent = await startAgent(t, { state: path.join(dir, 'sr'), sock: path.join(dir, 'r.sock'), volumes: { 'vol-a': imgB }, extra: ['--appliance', app.address, ...tls(rogue, 'agent-a'), '--stats-interval', '0.2'] })
  const fail = await rogueAgent.waitForLog(/replication stream to .* failed/)
  t.equal(fail.code, 'UNAVAILABLE', `no connection for a foreign certificate (${fail.msg})`)
  await retried(rogueAgent, 'vol-a', 3)
  const lines = rogueAgent.logs().filter((l) => /replication stream to .* failed/.test(String(l.msg)))
  const distinct = new Set(lines.map((l) => String(l.msg).replace(/\(\d{4}-[^)]*\)/g, '')))
  t.equal(lines.length, distinct.size, `each distinct failure is logged once while it retries (${distinct.size})`)
  t.equal(await rogueAgent.stop(), 0)
})

/** Waits until the agent's stats say its stream to the appliance failed `times` times (it retried). */
async function retried(agent: Awaited<ReturnType<typeof startAgent>>, volume: string, times: number): Promise<void> {
  const errors = (): number => (agent.logs().filter((l) => l.msg === 'stats' && l.volume === volume).pop()?.streamErrors as number | undefined) ?? 0
  for (const end = Date.now() + 60_000; errors() < times; await sleep(50)) {
    if (Date.now() > end) throw new Error(`the agent did not retry ${times} times within 60 s (${errors()}):\n${agent.out}`)
  }
}
