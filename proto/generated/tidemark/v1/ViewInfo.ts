// Original file: proto/tidemark/v1/admin.proto

import type { Long } from '@grpc/proto-loader';

export interface ViewInfo {
  'name'?: (string);
  'volume'?: (string);
  /**
   * The seq the view was pinned to when it was created (retention keeps it).
   */
  'seq'?: (number | string | Long);
  'writable'?: (boolean);
  /**
   * ISO 8601.
   */
  'createdAt'?: (string);
  'volumeSize'?: (number | string | Long);
  /**
   * What the point was, as given ("TimeMark 12 'nightly' (app, ...)", "seq 1234").
   */
  'point'?: (string);
  /**
   * NBD_INFO_DESCRIPTION of the export.
   */
  'description'?: (string);
  /**
   * Bytes the overlay takes on disk (0 for a read-only view).
   */
  'overlayBytes'?: (number | string | Long);
  /**
   * Where NBD clients reach it (nbd+unix:///NAME?socket=..., nbd://HOST:PORT/NAME).
   */
  'uris'?: (string)[];
}

export interface ViewInfo__Output {
  'name': (string);
  'volume': (string);
  /**
   * The seq the view was pinned to when it was created (retention keeps it).
   */
  'seq': (number);
  'writable': (boolean);
  /**
   * ISO 8601.
   */
  'createdAt': (string);
  'volumeSize': (number);
  /**
   * What the point was, as given ("TimeMark 12 'nightly' (app, ...)", "seq 1234").
   */
  'point': (string);
  /**
   * NBD_INFO_DESCRIPTION of the export.
   */
  'description': (string);
  /**
   * Bytes the overlay takes on disk (0 for a read-only view).
   */
  'overlayBytes': (number);
  /**
   * Where NBD clients reach it (nbd+unix:///NAME?socket=..., nbd://HOST:PORT/NAME).
   */
  'uris': (string)[];
}
