// Errors with stable codes, shared by every part of tidemark: callers switch
// on `code`, people read `message`. Over gRPC the message travels in the
// status details and the code in the status code (see proto/status.ts).
export class TidemarkError extends Error {
  readonly code: string
  constructor(code: string, message: string) {
    super(message)
    this.name = 'TidemarkError'
    this.code = code
  }
}
