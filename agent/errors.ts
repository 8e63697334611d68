// Errors with stable codes: callers switch on `code`, people read `message`.
export class TidemarkError extends Error {
  readonly code: string
  constructor(code: string, message: string) {
    super(message)
    this.name = 'TidemarkError'
    this.code = code
  }
}
