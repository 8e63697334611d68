#!/usr/bin/env node
'use strict'
// The installed command: runs the compiled CLI (npm install builds it into dist/).
// grpc-js sets the TLS server name to an IP address when connecting to one
// (DEP0123); a one-line-error CLI must not print that warning.
process.noDeprecation = true
// libuv's pool (4 threads by default) runs the daemons' fsyncs, reads,
// LevelDB and the per-batch checks and scans (frameBatchAsync, scanAsync):
// with 4, one slow fdatasync and a replica-image round leave the checks of
// every volume waiting. Read when the pool first starts, so set here.
if (!process.env.UV_THREADPOOL_SIZE) process.env.UV_THREADPOOL_SIZE = '8'
// Every file and directory tidemark creates holds a protected disk's bytes
// or what reaches them (segments, base images, maps, dirty maps, restores,
// sockets): owner only, whatever umask the shell had (022 would let every
// local user read every replicated disk). Native code creates files too, so
// the process umask, set before anything runs, is the one place for it.
process.umask(0o077)
const path = require('node:path')
const fs = require('node:fs')
const main = path.join(__dirname, '..', 'dist', 'cli', 'main.js')
if (!fs.existsSync(main)) {
  process.stderr.write('tidemark: not built (dist/cli/main.js is missing): run npm install\n')
  process.exit(1)
}
require(main)
  .main(process.argv.slice(2))
  .then(
    (code) => {
      process.exitCode = code
    },
    (err) => {
      // A system call that failed (ENOENT, EACCES, ENOTDIR on a path the user gave) says what and where in
      // its message: one line, as for tidemark's own errors. Anything else is a bug: its stack helps the report.
      const line =
        err && err.name === 'TidemarkError' ? err.message : err && err.syscall ? `tidemark ${process.argv[2]}: ${err.message}` : `tidemark: ${err && err.stack}`
      process.stderr.write(`${line}\n`)
      process.exitCode = err && err.code === 'USAGE' ? 2 : 1
    }
  )
