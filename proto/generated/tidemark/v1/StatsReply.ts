// Original file: proto/tidemark/v1/admin.proto

import type { ApplianceStats as _tidemark_v1_ApplianceStats, ApplianceStats__Output as _tidemark_v1_ApplianceStats__Output } from '../../tidemark/v1/ApplianceStats';
import type { VolumeStats as _tidemark_v1_VolumeStats, VolumeStats__Output as _tidemark_v1_VolumeStats__Output } from '../../tidemark/v1/VolumeStats';

/**
 * What `tidemark stats` shows (--json prints these fields, camelCase, unset
 * optional fields as null).
 */
export interface StatsReply {
  'appliance'?: (_tidemark_v1_ApplianceStats | null);
  'volumes'?: (_tidemark_v1_VolumeStats)[];
}

/**
 * What `tidemark stats` shows (--json prints these fields, camelCase, unset
 * optional fields as null).
 */
export interface StatsReply__Output {
  'appliance': (_tidemark_v1_ApplianceStats__Output | null);
  'volumes': (_tidemark_v1_VolumeStats__Output)[];
}
