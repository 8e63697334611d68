// NBD STARTTLS at the appliance (`appliance --nbd` with --tls-*), through
// libnbd's own TLS (nbdinfo, nbdcopy with nbds+unix:// and a certificates
// directory, as for nbdkit and qemu): an allowed certificate reads its
// volume's points byte-equal to restore; a certificate the allow-list does
// not give the volume is refused with the reason and does not see it listed;
// a certificate from another CA and a client without TLS get nothing.
import path from 'node:path'
import t from 'tap'
import { NbdClient, parseNbdUri } from '../client/nbd-client'
import { BIN, have, makeImage, makePki, must, nbdUri, run, sha256, startAgent, startAppliance, tlsArgs, tmpdir, waitFor } from './helpers'
import { certDir } from './lib/tls-clients'

const MiB = 1024 * 1024


t.test('the appliance NBD server requires TLS and maps certificates to volumes', { skip: !have('openssl') && 'openssl is not installed' }, async (t) => {
  const dir = tmpdir(t)
  const pki = path.join(dir, 'pki')
  const rogue = path.join(dir, 'rogue')
  await makePki(pki, ['appliance', 'agent', 'reader', 'other'])
  await makePki(rogue, ['reader'])
  const img = path.join(dir, 'disk.img')
  makeImage(img, 8 * MiB, 9)
  const sock = path.join(dir, 'tap.sock')
  const appSock = path.join(dir, 'app.sock')
  const app = await startAppliance(t, {
    data: path.join(dir, 'data'),
    extra: ['--nbd', `unix:${appSock}`, ...tlsArgs(pki, 'appliance'), '--allow', 'agent=v', '--allow', 'reader=read:v', '--allow', 'other=read:w'],
  })
  await startAgent(t, { state: path.join(dir, 'state'), sock, volumes: { v: img }, extra: ['--appliance', `localhost:${app.port}`, ...tlsArgs(pki, 'agent')] })
  await must('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 1M 64k', '-c', 'flush', nbdUri(sock, 'v')])
  const stats = async (): Promise<{ fullSyncDone: boolean; durableSeq: number }> => {
    const r = await run(process.execPath, [BIN, 'stats', '--appliance', `localhost:${app.port}`, '--volume', 'v', '--json', ...tlsArgs(pki, 'reader')])
    return r.code === 0 ? JSON.parse(r.stdout).volumes[0] : { fullSyncDone: false, durableSeq: 0 }
  }
  await waitFor(async () => (await stats()).fullSyncDone, 'the initial copy', 120_000, 100)

  const tlsUri = (name: string, who: string, from = pki): string =>
    `nbds+unix:///${name}?socket=${appSock}&tls-certificates=${certDir(from, who, path.join(dir, `certs-${who}-${path.basename(from)}`))}`

  // The allowed reader: a point, byte-equal to restore of it.
  const seq = (await stats()).durableSeq
  const copy = path.join(dir, 'copy.img')
  await must('nbdcopy', [tlsUri(`v@seq=${seq}`, 'reader'), copy])
  const restored = path.join(dir, 'restored.img')
  await must(process.execPath, [BIN, 'restore', '--appliance', `localhost:${app.port}`, '--volume', 'v', '--seq', String(seq), '--out', restored, ...tlsArgs(pki, 'reader')])
  t.equal(sha256(copy), sha256(restored), 'over TLS, the allowed certificate reads the point byte-equal to restore')
  t.match(await must('nbdinfo', ['--list', tlsUri('', 'reader')]), /export="v@latest"/, 'and sees the volume listed')

  // A certificate the allow-list gives another volume.
  const denied = await run('nbdinfo', [tlsUri('v@latest', 'other')], { env: { LIBNBD_DEBUG: '1' } })
  t.not(denied.code, 0, 'a certificate not allowed the volume is refused')
  t.match(denied.stderr, /certificate identity "other" may not read volume v/, 'with the reason in the reply')
  const otherList = await run('nbdinfo', ['--list', tlsUri('', 'other')])
  t.notMatch(otherList.stdout, /v@latest/, 'and does not see the volume listed')

  // A certificate another CA signed, and a client without TLS.
  const rogueRun = await run('nbdinfo', [tlsUri('v@latest', 'reader', rogue)])
  t.not(rogueRun.code, 0, 'a certificate from another CA gets nothing')
  const why = await waitFor(() => /(TLS handshake failed|the client certificate is not trusted)[^"]*/.exec(app.out + app.err)?.[0], 'the appliance to log the refusal', 30_000)
  t.pass(`the appliance logs why: ${why}`)
  const plain = await NbdClient.connect(parseNbdUri(`nbd+unix:///v@latest?socket=${appSock}`)!).then(
    async (c) => {
      await c.close()
      return 'accepted'
    },
    (e: Error) => e.message
  )
  t.match(plain, /requires TLS/, 'a client without TLS is told TLS is required')
})
