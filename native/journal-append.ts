// A journal segment's appender that writes with O_DIRECT
// (native/src/direct_append.h): no copy into the page cache, the largest
// single cost of the appliance's ingest when it wrote through it. The file
// may hold up to DIRECT_ALIGN - 1 zero bytes past the journal's end while it
// is appended to; trim() cuts them.
import { native } from './index'

/** Every direct write covers whole blocks of this size. */
export const DIRECT_ALIGN = 4096

export interface JournalAppender {
  /** Opens path for appends at end; false when the file system refuses O_DIRECT (write through the page cache instead). */
  open(path: string, end: number): Promise<boolean>
  /** Appends the buffers at offset (the current end); rejects with code ENOSPC, EIO, ... */
  append(bufs: Buffer[], offset: number): Promise<void>
  /** Cuts the file back to the journal's end (the padding of the last block). */
  trim(): Promise<void>
  close(): void
}

const Ctor = native.JournalAppender as new () => JournalAppender

export function newJournalAppender(): JournalAppender {
  return new Ctor()
}
