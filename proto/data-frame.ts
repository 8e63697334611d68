// The data channel's frames: the one owner of their layout, for the agent
// that writes them and the appliance that reads them.
//
// A data channel is a plain TCP connection (TLS when the Replicate stream is
// TLS) beside a Replicate stream (proto/tidemark/v1/replication.proto,
// Welcome.data_port). It carries the stream's AgentMessages, so a batch's
// payload never goes through protobuf or HTTP/2 framing: grpc-js hands
// JavaScript every 16 KiB HTTP/2 frame, concatenates them into a message and
// protobufjs copies the payload on both ends, which cost more CPU than the
// rest of the write path together (issue 10's profiles). One frame:
//
//   u32  magic 'TMDF' (little-endian 0x46444d54)
//   u32  M, the message's length: an AgentMessage, protobuf, as the stream
//        would carry it; a batch's `payload` field is left empty
//   u32  P, the payload's length: the batch's payload; 0 for other messages
//   M bytes of message, then P bytes of payload
//
// The first frame of a connection is a DataHello naming its stream. Each
// frame's message and payload land in buffers of their own (a slice of
// Node's pool for the message; a payload buffer from the reader's free list),
// which the delivered message keeps: the appliance checks a batch's payload
// on another thread after the callback returned (record-check.ts), so the
// reader never writes into a payload buffer until it is handed back with
// `release`. (A fresh buffer per payload doubled the appliance's GC time.)
import type { AgentMessage } from './generated/tidemark/v1/AgentMessage'
import type { AgentMessage__Output } from './generated/tidemark/v1/AgentMessage'
import { TidemarkError } from './errors'
import { MAX_MESSAGE_BYTES, replicationProto } from './load'

export const FRAME_MAGIC = 0x46444d54
export const FRAME_HEAD_BYTES = 12
/** A message without its payload: a batch's numbers, a fingerprint request of 4096 regions (≈ 40 KB). */
export const MAX_FRAME_MESSAGE = 256 * 1024
export const MAX_FRAME_PAYLOAD = MAX_MESSAGE_BYTES

/** Payload buffers come in these steps, so one freed by a batch fits the next of about its size. */
const PAYLOAD_GRANULE = 1024 * 1024
/** Payload buffers a reader keeps for reuse, at most. */
const MAX_FREE_BYTES = 64 * 1024 * 1024

const method = replicationProto.Replication.service.Replicate
const EMPTY = Buffer.alloc(0)

/** The frame's head and message; the payload (a batch's, or null) follows it on the wire as it is. */
export function encodeFrame(m: AgentMessage): { head: Buffer; payload: Buffer | null } {
  const payload = m.batch ? (m.batch.payload as Buffer) : null
  const msg = method.requestSerialize(payload ? { batch: { ...m.batch, payload: EMPTY } } : m)
  const head = Buffer.allocUnsafe(FRAME_HEAD_BYTES + msg.length)
  head.writeUInt32LE(FRAME_MAGIC, 0)
  head.writeUInt32LE(msg.length, 4)
  head.writeUInt32LE(payload ? payload.length : 0, 8)
  msg.copy(head, FRAME_HEAD_BYTES)
  return { head, payload }
}

const enum Part {
  Head,
  Message,
  Payload,
}

/**
 * Reassembles frames from a byte stream: hand it chunks with `push` (they
 * are copied into place), or ask `target()` where the next bytes go and
 * report them with `filled(n)` (a reader that can read into a given buffer:
 * no copy). A bad frame throws a TidemarkError (PROTOCOL, BATCH_TOO_LARGE)
 * and the reader is done.
 */
export class FrameReader {
  private readonly head = Buffer.alloc(FRAME_HEAD_BYTES)
  private message = Buffer.alloc(0)
  private payload: Buffer = Buffer.alloc(0)
  /** payload buffers handed back (whole allocations), and their bytes */
  private readonly free: Buffer[] = []
  private freeBytes = 0
  private part = Part.Head
  private fill = 0
  private messageLength = 0
  private payloadLength = 0
  /** frames delivered */
  frames = 0

  constructor(private readonly deliver: (m: AgentMessage__Output) => void) {}

  /** Where the next bytes go: never empty. */
  target(): Buffer {
    switch (this.part) {
      case Part.Head:
        return this.head.subarray(this.fill)
      case Part.Message:
        return this.message.subarray(this.fill, this.messageLength)
      case Part.Payload:
        return this.payload.subarray(this.fill, this.payloadLength)
    }
  }

  /** n bytes were written at target(). */
  filled(n: number): void {
    this.fill += n
    switch (this.part) {
      case Part.Head:
        if (this.fill === FRAME_HEAD_BYTES) this.onHead()
        return
      case Part.Message:
        if (this.fill === this.messageLength) {
          if (this.payloadLength > 0) this.begin(Part.Payload)
          else this.onFrame()
        }
        return
      case Part.Payload:
        if (this.fill === this.payloadLength) this.onFrame()
    }
  }

  /** Takes a chunk read elsewhere (copied into place). */
  push(chunk: Buffer): void {
    let at = 0
    while (at < chunk.length) {
      const t = this.target()
      const n = chunk.copy(t, 0, at)
      at += n
      this.filled(n)
    }
  }

  /** True between frames: a connection that ends here ended cleanly. */
  get atBoundary(): boolean {
    return this.part === Part.Head && this.fill === 0
  }

  /** A payload this reader delivered is no longer read: its buffer may take a later payload. */
  release(payload: Buffer): void {
    const whole = Buffer.from(payload.buffer, 0, payload.buffer.byteLength)
    if (this.freeBytes + whole.length > MAX_FREE_BYTES) return
    this.free.push(whole)
    this.freeBytes += whole.length
  }

  private take(n: number): Buffer {
    const i = this.free.findIndex((b) => b.length >= n)
    if (i >= 0) {
      const b = this.free[i]
      this.free[i] = this.free[this.free.length - 1]
      this.free.pop()
      this.freeBytes -= b.length
      return b.subarray(0, n)
    }
    return Buffer.allocUnsafeSlow(Math.ceil(n / PAYLOAD_GRANULE) * PAYLOAD_GRANULE).subarray(0, n)
  }

  private begin(part: Part): void {
    this.part = part
    this.fill = 0
  }

  private onHead(): void {
    const h = this.head
    const magic = h.readUInt32LE(0)
    if (magic !== FRAME_MAGIC) {
      throw new TidemarkError('PROTOCOL', `data channel: a frame starts with 0x${magic.toString(16).padStart(8, '0')}, not the TMDF magic`)
    }
    this.messageLength = h.readUInt32LE(4)
    this.payloadLength = h.readUInt32LE(8)
    if (this.messageLength === 0 || this.messageLength > MAX_FRAME_MESSAGE) {
      throw new TidemarkError('PROTOCOL', `data channel: a frame's message of ${this.messageLength} bytes (1 to ${MAX_FRAME_MESSAGE})`)
    }
    if (this.payloadLength > MAX_FRAME_PAYLOAD) {
      throw new TidemarkError('BATCH_TOO_LARGE', `data channel: a payload of ${this.payloadLength} bytes is over the ${MAX_FRAME_PAYLOAD}-byte limit`)
    }
    this.message = Buffer.allocUnsafe(this.messageLength)
    this.payload = this.payloadLength > 0 ? this.take(this.payloadLength) : Buffer.alloc(0)
    this.begin(Part.Message)
  }

  private onFrame(): void {
    let m: AgentMessage__Output
    try {
      m = method.requestDeserialize(this.message)
    } catch (err) {
      throw new TidemarkError('PROTOCOL', `data channel: a frame's message does not decode: ${(err as Error).message}`)
    }
    if (this.payloadLength > 0) {
      if (m.body !== 'batch' || !m.batch) throw new TidemarkError('PROTOCOL', `data channel: a ${m.body ?? 'empty message'} frame carries a payload`)
      if (m.batch.payload.length > 0) throw new TidemarkError('PROTOCOL', 'data channel: a batch carries its payload twice (in the message and after it)')
      m.batch.payload = this.payload
    }
    this.begin(Part.Head)
    this.frames++
    this.deliver(m)
  }
}
