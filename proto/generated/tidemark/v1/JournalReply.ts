// Original file: proto/tidemark/v1/admin.proto

import type { VolumeJournal as _tidemark_v1_VolumeJournal, VolumeJournal__Output as _tidemark_v1_VolumeJournal__Output } from '../../tidemark/v1/VolumeJournal';

/**
 * One entry per volume, in the appliance's order; the action's field is set.
 */
export interface JournalReply {
  'volumes'?: (_tidemark_v1_VolumeJournal)[];
}

/**
 * One entry per volume, in the appliance's order; the action's field is set.
 */
export interface JournalReply__Output {
  'volumes': (_tidemark_v1_VolumeJournal__Output)[];
}
