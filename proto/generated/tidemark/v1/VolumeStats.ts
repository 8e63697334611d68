// Original file: proto/tidemark/v1/admin.proto

import type { Rejections as _tidemark_v1_Rejections, Rejections__Output as _tidemark_v1_Rejections__Output } from '../../tidemark/v1/Rejections';
import type { CorruptRange as _tidemark_v1_CorruptRange, CorruptRange__Output as _tidemark_v1_CorruptRange__Output } from '../../tidemark/v1/CorruptRange';
import type { InexactWindow as _tidemark_v1_InexactWindow, InexactWindow__Output as _tidemark_v1_InexactWindow__Output } from '../../tidemark/v1/InexactWindow';
import type { BaseImage as _tidemark_v1_BaseImage, BaseImage__Output as _tidemark_v1_BaseImage__Output } from '../../tidemark/v1/BaseImage';
import type { RetentionStatus as _tidemark_v1_RetentionStatus, RetentionStatus__Output as _tidemark_v1_RetentionStatus__Output } from '../../tidemark/v1/RetentionStatus';
import type { AgentStream as _tidemark_v1_AgentStream, AgentStream__Output as _tidemark_v1_AgentStream__Output } from '../../tidemark/v1/AgentStream';
import type { ReplicaImageStatus as _tidemark_v1_ReplicaImageStatus, ReplicaImageStatus__Output as _tidemark_v1_ReplicaImageStatus__Output } from '../../tidemark/v1/ReplicaImageStatus';
import type { VolumeSeed as _tidemark_v1_VolumeSeed, VolumeSeed__Output as _tidemark_v1_VolumeSeed__Output } from '../../tidemark/v1/VolumeSeed';
import type { Long } from '@grpc/proto-loader';

export interface VolumeStats {
  'name'?: (string);
  'volume'?: (string);
  'generation'?: (string);
  'size'?: (number | string | Long);
  'group'?: (string);
  'agentId'?: (string);
  'journalBytes'?: (number | string | Long);
  'segments'?: (number | string | Long);
  'records'?: (number | string | Long);
  'batches'?: (number | string | Long);
  'durableSeq'?: (number | string | Long);
  'acceptedSeq'?: (number | string | Long);
  'firstSeq'?: (number | string | Long);
  'indexedSeq'?: (number | string | Long);
  'appBytes'?: (number | string | Long);
  'changedBytes'?: (number | string | Long);
  'wireBytes'?: (number | string | Long);
  'rangeEntries'?: (number | string | Long);
  'rejected'?: (_tidemark_v1_Rejections | null);
  'corrupt'?: (_tidemark_v1_CorruptRange)[];
  'fullSyncDone'?: (boolean);
  'timemarks'?: (number | string | Long);
  /**
   * The newest exact point, the oldest one, and the windows of inexact points.
   */
  'exactSeq'?: (number | string | Long);
  'oldestExactSeq'?: (number | string | Long);
  'inexactWindows'?: (_tidemark_v1_InexactWindow)[];
  /**
   * Unset while no history has been folded into a base image.
   */
  'base'?: (_tidemark_v1_BaseImage | null);
  /**
   * ISO 8601: the base's time, or the volume's creation.
   */
  'retainedSince'?: (string);
  'retainedWindowSeconds'?: (number | string | Long);
  /**
   * Why the volume stopped accepting batches; unset while it accepts them.
   */
  'failed'?: (string);
  /**
   * Unset on an appliance without retention.
   */
  'retention'?: (_tidemark_v1_RetentionStatus | null);
  /**
   * The agent streaming to the volume now; unset if none.
   */
  'agent'?: (_tidemark_v1_AgentStream | null);
  /**
   * Whether the volume accepts batches: normal, no_space, io_error or
   * read_only (a failed fsync), why not, and since when (ISO 8601).
   */
  'state'?: (string);
  'stateReason'?: (string);
  'stateSince'?: (string);
  /**
   * Faults met since the appliance started, by state.
   */
  'faults'?: ({[key: string]: number | string | Long});
  /**
   * Unset when the appliance keeps no replica images (--replica-image off).
   */
  'replica'?: (_tidemark_v1_ReplicaImageStatus | null);
  /**
   * Set on a volume Admin.SeedVolume created: where its first point came from.
   */
  'seed'?: (_tidemark_v1_VolumeSeed | null);
  '_failed'?: "failed";
  '_stateReason'?: "stateReason";
  '_stateSince'?: "stateSince";
}

export interface VolumeStats__Output {
  'name': (string);
  'volume': (string);
  'generation': (string);
  'size': (number);
  'group': (string);
  'agentId': (string);
  'journalBytes': (number);
  'segments': (number);
  'records': (number);
  'batches': (number);
  'durableSeq': (number);
  'acceptedSeq': (number);
  'firstSeq': (number);
  'indexedSeq': (number);
  'appBytes': (number);
  'changedBytes': (number);
  'wireBytes': (number);
  'rangeEntries': (number);
  'rejected': (_tidemark_v1_Rejections__Output | null);
  'corrupt': (_tidemark_v1_CorruptRange__Output)[];
  'fullSyncDone': (boolean);
  'timemarks': (number);
  /**
   * The newest exact point, the oldest one, and the windows of inexact points.
   */
  'exactSeq': (number);
  'oldestExactSeq': (number);
  'inexactWindows': (_tidemark_v1_InexactWindow__Output)[];
  /**
   * Unset while no history has been folded into a base image.
   */
  'base': (_tidemark_v1_BaseImage__Output | null);
  /**
   * ISO 8601: the base's time, or the volume's creation.
   */
  'retainedSince': (string);
  'retainedWindowSeconds': (number);
  /**
   * Why the volume stopped accepting batches; unset while it accepts them.
   */
  'failed'?: (string);
  /**
   * Unset on an appliance without retention.
   */
  'retention': (_tidemark_v1_RetentionStatus__Output | null);
  /**
   * The agent streaming to the volume now; unset if none.
   */
  'agent': (_tidemark_v1_AgentStream__Output | null);
  /**
   * Whether the volume accepts batches: normal, no_space, io_error or
   * read_only (a failed fsync), why not, and since when (ISO 8601).
   */
  'state': (string);
  'stateReason'?: (string);
  'stateSince'?: (string);
  /**
   * Faults met since the appliance started, by state.
   */
  'faults': ({[key: string]: number});
  /**
   * Unset when the appliance keeps no replica images (--replica-image off).
   */
  'replica': (_tidemark_v1_ReplicaImageStatus__Output | null);
  /**
   * Set on a volume Admin.SeedVolume created: where its first point came from.
   */
  'seed': (_tidemark_v1_VolumeSeed__Output | null);
  '_failed'?: "failed";
  '_stateReason'?: "stateReason";
  '_stateSince'?: "stateSince";
}
