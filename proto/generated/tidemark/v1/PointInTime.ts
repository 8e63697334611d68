// Original file: proto/tidemark/v1/admin.proto

import type { Long } from '@grpc/proto-loader';

export interface PointInTime {
  'seq'?: (number | string | Long);
  'latest'?: (boolean);
  /**
   * A TimeMark's id (its seq, in decimal) or its label.
   */
  'timemark'?: (string);
  /**
   * The newest seq whose change was recorded at or before this wall time
   * (milliseconds since the epoch).
   */
  'atMs'?: (number | string | Long);
  'point'?: "seq"|"latest"|"timemark"|"atMs";
}

export interface PointInTime__Output {
  'seq'?: (number);
  'latest'?: (boolean);
  /**
   * A TimeMark's id (its seq, in decimal) or its label.
   */
  'timemark'?: (string);
  /**
   * The newest seq whose change was recorded at or before this wall time
   * (milliseconds since the epoch).
   */
  'atMs'?: (number);
  'point'?: "seq"|"latest"|"timemark"|"atMs";
}
