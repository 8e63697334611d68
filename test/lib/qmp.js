#!/usr/bin/env node
// One QMP command to a qemu monitor socket: `node qmp.js SOCKET COMMAND [ARGS-JSON]`.
// Prints QMP's "return" as JSON and exits 0, or prints QMP's error (or why it
// could not ask) on stderr and exits 1. Plain JavaScript on purpose: it runs
// as a TimeMark hook (`sh -c`), where no TypeScript loader is at hand, e.g.
//   --quiesce 'node test/lib/qmp.js vm.qmp stop' --thaw 'node test/lib/qmp.js vm.qmp cont'
// (`stop` returns once qemu has paused the vCPUs and drained and flushed the
// guest's disk requests: the disk then holds everything the guest wrote).
'use strict'
const net = require('node:net')

const [sock, execute, argsJson] = process.argv.slice(2)
if (!sock || !execute) {
  process.stderr.write('usage: node qmp.js SOCKET COMMAND [ARGS-JSON]\n')
  process.exit(2)
}
const command = argsJson ? { execute, arguments: JSON.parse(argsJson) } : { execute }
const fail = (why) => {
  process.stderr.write(`QMP ${execute} on ${sock}: ${why}\n`)
  process.exit(1)
}
const timer = setTimeout(() => fail('no answer within 30 s'), 30_000)
const c = net.connect(sock)
let buf = ''
let step = 0 // 0: greeting, 1: capabilities sent, 2: command sent
c.on('error', (e) => fail(e.message))
c.on('close', () => step < 3 && fail('the monitor closed the connection'))
c.on('data', (d) => {
  buf += d
  for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
    const msg = JSON.parse(buf.slice(0, nl))
    buf = buf.slice(nl + 1)
    if (msg.event) continue
    if (msg.error) fail(msg.error.desc)
    if (step === 0 && msg.QMP) {
      step = 1
      c.write(`${JSON.stringify({ execute: 'qmp_capabilities' })}\n`)
    } else if (step === 1 && 'return' in msg) {
      step = 2
      c.write(`${JSON.stringify(command)}\n`)
    } else if (step === 2 && 'return' in msg) {
      step = 3
      clearTimeout(timer)
      process.stdout.write(`${JSON.stringify(msg.return)}\n`)
      c.end()
    }
  }
})
