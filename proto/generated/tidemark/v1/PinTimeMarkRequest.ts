// Original file: proto/tidemark/v1/admin.proto


export interface PinTimeMarkRequest {
  'volume'?: (string);
  /**
   * An id or a label, as PointInTime.timemark.
   */
  'timemark'?: (string);
  'pinned'?: (boolean);
}

export interface PinTimeMarkRequest__Output {
  'volume': (string);
  /**
   * An id or a label, as PointInTime.timemark.
   */
  'timemark': (string);
  'pinned': (boolean);
}
