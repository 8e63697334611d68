// Original file: proto/tidemark/v1/admin.proto

import type { PointInTime as _tidemark_v1_PointInTime, PointInTime__Output as _tidemark_v1_PointInTime__Output } from '../../tidemark/v1/PointInTime';

export interface CreateViewRequest {
  'volume'?: (string);
  'point'?: (_tidemark_v1_PointInTime | null);
  /**
   * The export name: [A-Za-z0-9._-]{1,64}, not "." or "..", not a volume's name.
   */
  'name'?: (string);
  /**
   * Add a copy-on-write overlay kept in the appliance's data directory.
   */
  'writable'?: (boolean);
}

export interface CreateViewRequest__Output {
  'volume': (string);
  'point': (_tidemark_v1_PointInTime__Output | null);
  /**
   * The export name: [A-Za-z0-9._-]{1,64}, not "." or "..", not a volume's name.
   */
  'name': (string);
  /**
   * Add a copy-on-write overlay kept in the appliance's data directory.
   */
  'writable': (boolean);
}
