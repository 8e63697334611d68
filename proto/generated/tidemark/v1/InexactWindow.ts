// Original file: proto/tidemark/v1/admin.proto

import type { Long } from '@grpc/proto-loader';

/**
 * Inexact points: every seq s with start < s < end (end 0: no end yet).
 */
export interface InexactWindow {
  'start'?: (number | string | Long);
  'end'?: (number | string | Long);
}

/**
 * Inexact points: every seq s with start < s < end (end 0: no end yet).
 */
export interface InexactWindow__Output {
  'start': (number);
  'end': (number);
}
