// Fault injection for crash-safety tests: a process started with
// TIDEMARK_CRASH_AT=NAME kills itself with SIGKILL (no cleanup, no flush,
// exactly a kill -9) when it reaches crashPoint(NAME). Without the variable
// a crash point costs one comparison. The test suite uses it to stop a
// compaction at each of its steps (test/retention.test.ts).
const at = process.env.TIDEMARK_CRASH_AT

export function crashPoint(name: string): void {
  if (at === name) process.kill(process.pid, 'SIGKILL')
}
