// Original file: proto/tidemark/v1/admin.proto

import type * as grpc from '@grpc/grpc-js'
import type { MethodDefinition } from '@grpc/proto-loader'
import type { AcceptGenerationReply as _tidemark_v1_AcceptGenerationReply, AcceptGenerationReply__Output as _tidemark_v1_AcceptGenerationReply__Output } from '../../tidemark/v1/AcceptGenerationReply';
import type { AcceptGenerationRequest as _tidemark_v1_AcceptGenerationRequest, AcceptGenerationRequest__Output as _tidemark_v1_AcceptGenerationRequest__Output } from '../../tidemark/v1/AcceptGenerationRequest';
import type { AuditEntry as _tidemark_v1_AuditEntry, AuditEntry__Output as _tidemark_v1_AuditEntry__Output } from '../../tidemark/v1/AuditEntry';
import type { CompactReply as _tidemark_v1_CompactReply, CompactReply__Output as _tidemark_v1_CompactReply__Output } from '../../tidemark/v1/CompactReply';
import type { CompactRequest as _tidemark_v1_CompactRequest, CompactRequest__Output as _tidemark_v1_CompactRequest__Output } from '../../tidemark/v1/CompactRequest';
import type { CreateViewRequest as _tidemark_v1_CreateViewRequest, CreateViewRequest__Output as _tidemark_v1_CreateViewRequest__Output } from '../../tidemark/v1/CreateViewRequest';
import type { DeleteViewRequest as _tidemark_v1_DeleteViewRequest, DeleteViewRequest__Output as _tidemark_v1_DeleteViewRequest__Output } from '../../tidemark/v1/DeleteViewRequest';
import type { FingerprintsReply as _tidemark_v1_FingerprintsReply, FingerprintsReply__Output as _tidemark_v1_FingerprintsReply__Output } from '../../tidemark/v1/FingerprintsReply';
import type { FingerprintsRequest as _tidemark_v1_FingerprintsRequest, FingerprintsRequest__Output as _tidemark_v1_FingerprintsRequest__Output } from '../../tidemark/v1/FingerprintsRequest';
import type { ImageChunk as _tidemark_v1_ImageChunk, ImageChunk__Output as _tidemark_v1_ImageChunk__Output } from '../../tidemark/v1/ImageChunk';
import type { JournalReply as _tidemark_v1_JournalReply, JournalReply__Output as _tidemark_v1_JournalReply__Output } from '../../tidemark/v1/JournalReply';
import type { JournalRequest as _tidemark_v1_JournalRequest, JournalRequest__Output as _tidemark_v1_JournalRequest__Output } from '../../tidemark/v1/JournalRequest';
import type { ListAuditReply as _tidemark_v1_ListAuditReply, ListAuditReply__Output as _tidemark_v1_ListAuditReply__Output } from '../../tidemark/v1/ListAuditReply';
import type { ListAuditRequest as _tidemark_v1_ListAuditRequest, ListAuditRequest__Output as _tidemark_v1_ListAuditRequest__Output } from '../../tidemark/v1/ListAuditRequest';
import type { ListTimeMarksReply as _tidemark_v1_ListTimeMarksReply, ListTimeMarksReply__Output as _tidemark_v1_ListTimeMarksReply__Output } from '../../tidemark/v1/ListTimeMarksReply';
import type { ListTimeMarksRequest as _tidemark_v1_ListTimeMarksRequest, ListTimeMarksRequest__Output as _tidemark_v1_ListTimeMarksRequest__Output } from '../../tidemark/v1/ListTimeMarksRequest';
import type { ListViewsReply as _tidemark_v1_ListViewsReply, ListViewsReply__Output as _tidemark_v1_ListViewsReply__Output } from '../../tidemark/v1/ListViewsReply';
import type { ListViewsRequest as _tidemark_v1_ListViewsRequest, ListViewsRequest__Output as _tidemark_v1_ListViewsRequest__Output } from '../../tidemark/v1/ListViewsRequest';
import type { PinTimeMarkRequest as _tidemark_v1_PinTimeMarkRequest, PinTimeMarkRequest__Output as _tidemark_v1_PinTimeMarkRequest__Output } from '../../tidemark/v1/PinTimeMarkRequest';
import type { ReadReply as _tidemark_v1_ReadReply, ReadReply__Output as _tidemark_v1_ReadReply__Output } from '../../tidemark/v1/ReadReply';
import type { ReadRequest as _tidemark_v1_ReadRequest, ReadRequest__Output as _tidemark_v1_ReadRequest__Output } from '../../tidemark/v1/ReadRequest';
import type { RecordAuditRequest as _tidemark_v1_RecordAuditRequest, RecordAuditRequest__Output as _tidemark_v1_RecordAuditRequest__Output } from '../../tidemark/v1/RecordAuditRequest';
import type { ResolveReply as _tidemark_v1_ResolveReply, ResolveReply__Output as _tidemark_v1_ResolveReply__Output } from '../../tidemark/v1/ResolveReply';
import type { ResolveRequest as _tidemark_v1_ResolveRequest, ResolveRequest__Output as _tidemark_v1_ResolveRequest__Output } from '../../tidemark/v1/ResolveRequest';
import type { RestoreRequest as _tidemark_v1_RestoreRequest, RestoreRequest__Output as _tidemark_v1_RestoreRequest__Output } from '../../tidemark/v1/RestoreRequest';
import type { SeedVolumeReply as _tidemark_v1_SeedVolumeReply, SeedVolumeReply__Output as _tidemark_v1_SeedVolumeReply__Output } from '../../tidemark/v1/SeedVolumeReply';
import type { SeedVolumeRequest as _tidemark_v1_SeedVolumeRequest, SeedVolumeRequest__Output as _tidemark_v1_SeedVolumeRequest__Output } from '../../tidemark/v1/SeedVolumeRequest';
import type { ServerInfoReply as _tidemark_v1_ServerInfoReply, ServerInfoReply__Output as _tidemark_v1_ServerInfoReply__Output } from '../../tidemark/v1/ServerInfoReply';
import type { ServerInfoRequest as _tidemark_v1_ServerInfoRequest, ServerInfoRequest__Output as _tidemark_v1_ServerInfoRequest__Output } from '../../tidemark/v1/ServerInfoRequest';
import type { StatsReply as _tidemark_v1_StatsReply, StatsReply__Output as _tidemark_v1_StatsReply__Output } from '../../tidemark/v1/StatsReply';
import type { StatsRequest as _tidemark_v1_StatsRequest, StatsRequest__Output as _tidemark_v1_StatsRequest__Output } from '../../tidemark/v1/StatsRequest';
import type { TimeMark as _tidemark_v1_TimeMark, TimeMark__Output as _tidemark_v1_TimeMark__Output } from '../../tidemark/v1/TimeMark';
import type { ViewInfo as _tidemark_v1_ViewInfo, ViewInfo__Output as _tidemark_v1_ViewInfo__Output } from '../../tidemark/v1/ViewInfo';

export interface AdminClient extends grpc.Client {
  /**
   * An agent announced a new generation or size for a volume and was refused:
   * the volume's history so far is kept, read-only and restorable, under a
   * new name (VOLUME.retired-N), and the agent's next hello starts a new
   * history under the volume's name. Needs the admin role.
   */
  AcceptGeneration(argument: _tidemark_v1_AcceptGenerationRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_AcceptGenerationReply__Output>): grpc.ClientUnaryCall;
  AcceptGeneration(argument: _tidemark_v1_AcceptGenerationRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_tidemark_v1_AcceptGenerationReply__Output>): grpc.ClientUnaryCall;
  AcceptGeneration(argument: _tidemark_v1_AcceptGenerationRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_AcceptGenerationReply__Output>): grpc.ClientUnaryCall;
  AcceptGeneration(argument: _tidemark_v1_AcceptGenerationRequest, callback: grpc.requestCallback<_tidemark_v1_AcceptGenerationReply__Output>): grpc.ClientUnaryCall;
  /**
   * An agent announced a new generation or size for a volume and was refused:
   * the volume's history so far is kept, read-only and restorable, under a
   * new name (VOLUME.retired-N), and the agent's next hello starts a new
   * history under the volume's name. Needs the admin role.
   */
  acceptGeneration(argument: _tidemark_v1_AcceptGenerationRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_AcceptGenerationReply__Output>): grpc.ClientUnaryCall;
  acceptGeneration(argument: _tidemark_v1_AcceptGenerationRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_tidemark_v1_AcceptGenerationReply__Output>): grpc.ClientUnaryCall;
  acceptGeneration(argument: _tidemark_v1_AcceptGenerationRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_AcceptGenerationReply__Output>): grpc.ClientUnaryCall;
  acceptGeneration(argument: _tidemark_v1_AcceptGenerationRequest, callback: grpc.requestCallback<_tidemark_v1_AcceptGenerationReply__Output>): grpc.ClientUnaryCall;
  
  /**
   * Applies the volume's retention now: folds expired history into the base
   * image and reclaims its segments.
   */
  Compact(argument: _tidemark_v1_CompactRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_CompactReply__Output>): grpc.ClientUnaryCall;
  Compact(argument: _tidemark_v1_CompactRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_tidemark_v1_CompactReply__Output>): grpc.ClientUnaryCall;
  Compact(argument: _tidemark_v1_CompactRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_CompactReply__Output>): grpc.ClientUnaryCall;
  Compact(argument: _tidemark_v1_CompactRequest, callback: grpc.requestCallback<_tidemark_v1_CompactReply__Output>): grpc.ClientUnaryCall;
  /**
   * Applies the volume's retention now: folds expired history into the base
   * image and reclaims its segments.
   */
  compact(argument: _tidemark_v1_CompactRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_CompactReply__Output>): grpc.ClientUnaryCall;
  compact(argument: _tidemark_v1_CompactRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_tidemark_v1_CompactReply__Output>): grpc.ClientUnaryCall;
  compact(argument: _tidemark_v1_CompactRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_CompactReply__Output>): grpc.ClientUnaryCall;
  compact(argument: _tidemark_v1_CompactRequest, callback: grpc.requestCallback<_tidemark_v1_CompactReply__Output>): grpc.ClientUnaryCall;
  
  /**
   * Named views the appliance serves from its own NBD server (tidemark
   * timeview create|list|delete): a volume pinned at one seq, read-only or
   * with a durable copy-on-write overlay in the appliance's data directory.
   */
  CreateView(argument: _tidemark_v1_CreateViewRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_ViewInfo__Output>): grpc.ClientUnaryCall;
  CreateView(argument: _tidemark_v1_CreateViewRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_tidemark_v1_ViewInfo__Output>): grpc.ClientUnaryCall;
  CreateView(argument: _tidemark_v1_CreateViewRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_ViewInfo__Output>): grpc.ClientUnaryCall;
  CreateView(argument: _tidemark_v1_CreateViewRequest, callback: grpc.requestCallback<_tidemark_v1_ViewInfo__Output>): grpc.ClientUnaryCall;
  /**
   * Named views the appliance serves from its own NBD server (tidemark
   * timeview create|list|delete): a volume pinned at one seq, read-only or
   * with a durable copy-on-write overlay in the appliance's data directory.
   */
  createView(argument: _tidemark_v1_CreateViewRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_ViewInfo__Output>): grpc.ClientUnaryCall;
  createView(argument: _tidemark_v1_CreateViewRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_tidemark_v1_ViewInfo__Output>): grpc.ClientUnaryCall;
  createView(argument: _tidemark_v1_CreateViewRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_ViewInfo__Output>): grpc.ClientUnaryCall;
  createView(argument: _tidemark_v1_CreateViewRequest, callback: grpc.requestCallback<_tidemark_v1_ViewInfo__Output>): grpc.ClientUnaryCall;
  
  DeleteView(argument: _tidemark_v1_DeleteViewRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_ViewInfo__Output>): grpc.ClientUnaryCall;
  DeleteView(argument: _tidemark_v1_DeleteViewRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_tidemark_v1_ViewInfo__Output>): grpc.ClientUnaryCall;
  DeleteView(argument: _tidemark_v1_DeleteViewRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_ViewInfo__Output>): grpc.ClientUnaryCall;
  DeleteView(argument: _tidemark_v1_DeleteViewRequest, callback: grpc.requestCallback<_tidemark_v1_ViewInfo__Output>): grpc.ClientUnaryCall;
  deleteView(argument: _tidemark_v1_DeleteViewRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_ViewInfo__Output>): grpc.ClientUnaryCall;
  deleteView(argument: _tidemark_v1_DeleteViewRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_tidemark_v1_ViewInfo__Output>): grpc.ClientUnaryCall;
  deleteView(argument: _tidemark_v1_DeleteViewRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_ViewInfo__Output>): grpc.ClientUnaryCall;
  deleteView(argument: _tidemark_v1_DeleteViewRequest, callback: grpc.requestCallback<_tidemark_v1_ViewInfo__Output>): grpc.ClientUnaryCall;
  
  /**
   * Per-sector fingerprints of some 64 KiB regions at a seq (failback
   * compares them with the production volume before sending anything).
   */
  Fingerprints(argument: _tidemark_v1_FingerprintsRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_FingerprintsReply__Output>): grpc.ClientUnaryCall;
  Fingerprints(argument: _tidemark_v1_FingerprintsRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_tidemark_v1_FingerprintsReply__Output>): grpc.ClientUnaryCall;
  Fingerprints(argument: _tidemark_v1_FingerprintsRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_FingerprintsReply__Output>): grpc.ClientUnaryCall;
  Fingerprints(argument: _tidemark_v1_FingerprintsRequest, callback: grpc.requestCallback<_tidemark_v1_FingerprintsReply__Output>): grpc.ClientUnaryCall;
  /**
   * Per-sector fingerprints of some 64 KiB regions at a seq (failback
   * compares them with the production volume before sending anything).
   */
  fingerprints(argument: _tidemark_v1_FingerprintsRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_FingerprintsReply__Output>): grpc.ClientUnaryCall;
  fingerprints(argument: _tidemark_v1_FingerprintsRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_tidemark_v1_FingerprintsReply__Output>): grpc.ClientUnaryCall;
  fingerprints(argument: _tidemark_v1_FingerprintsRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_FingerprintsReply__Output>): grpc.ClientUnaryCall;
  fingerprints(argument: _tidemark_v1_FingerprintsRequest, callback: grpc.requestCallback<_tidemark_v1_FingerprintsReply__Output>): grpc.ClientUnaryCall;
  
  Journal(argument: _tidemark_v1_JournalRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_JournalReply__Output>): grpc.ClientUnaryCall;
  Journal(argument: _tidemark_v1_JournalRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_tidemark_v1_JournalReply__Output>): grpc.ClientUnaryCall;
  Journal(argument: _tidemark_v1_JournalRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_JournalReply__Output>): grpc.ClientUnaryCall;
  Journal(argument: _tidemark_v1_JournalRequest, callback: grpc.requestCallback<_tidemark_v1_JournalReply__Output>): grpc.ClientUnaryCall;
  journal(argument: _tidemark_v1_JournalRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_JournalReply__Output>): grpc.ClientUnaryCall;
  journal(argument: _tidemark_v1_JournalRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_tidemark_v1_JournalReply__Output>): grpc.ClientUnaryCall;
  journal(argument: _tidemark_v1_JournalRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_JournalReply__Output>): grpc.ClientUnaryCall;
  journal(argument: _tidemark_v1_JournalRequest, callback: grpc.requestCallback<_tidemark_v1_JournalReply__Output>): grpc.ClientUnaryCall;
  
  ListAudit(argument: _tidemark_v1_ListAuditRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_ListAuditReply__Output>): grpc.ClientUnaryCall;
  ListAudit(argument: _tidemark_v1_ListAuditRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_tidemark_v1_ListAuditReply__Output>): grpc.ClientUnaryCall;
  ListAudit(argument: _tidemark_v1_ListAuditRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_ListAuditReply__Output>): grpc.ClientUnaryCall;
  ListAudit(argument: _tidemark_v1_ListAuditRequest, callback: grpc.requestCallback<_tidemark_v1_ListAuditReply__Output>): grpc.ClientUnaryCall;
  listAudit(argument: _tidemark_v1_ListAuditRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_ListAuditReply__Output>): grpc.ClientUnaryCall;
  listAudit(argument: _tidemark_v1_ListAuditRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_tidemark_v1_ListAuditReply__Output>): grpc.ClientUnaryCall;
  listAudit(argument: _tidemark_v1_ListAuditRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_ListAuditReply__Output>): grpc.ClientUnaryCall;
  listAudit(argument: _tidemark_v1_ListAuditRequest, callback: grpc.requestCallback<_tidemark_v1_ListAuditReply__Output>): grpc.ClientUnaryCall;
  
  ListTimeMarks(argument: _tidemark_v1_ListTimeMarksRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_ListTimeMarksReply__Output>): grpc.ClientUnaryCall;
  ListTimeMarks(argument: _tidemark_v1_ListTimeMarksRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_tidemark_v1_ListTimeMarksReply__Output>): grpc.ClientUnaryCall;
  ListTimeMarks(argument: _tidemark_v1_ListTimeMarksRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_ListTimeMarksReply__Output>): grpc.ClientUnaryCall;
  ListTimeMarks(argument: _tidemark_v1_ListTimeMarksRequest, callback: grpc.requestCallback<_tidemark_v1_ListTimeMarksReply__Output>): grpc.ClientUnaryCall;
  listTimeMarks(argument: _tidemark_v1_ListTimeMarksRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_ListTimeMarksReply__Output>): grpc.ClientUnaryCall;
  listTimeMarks(argument: _tidemark_v1_ListTimeMarksRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_tidemark_v1_ListTimeMarksReply__Output>): grpc.ClientUnaryCall;
  listTimeMarks(argument: _tidemark_v1_ListTimeMarksRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_ListTimeMarksReply__Output>): grpc.ClientUnaryCall;
  listTimeMarks(argument: _tidemark_v1_ListTimeMarksRequest, callback: grpc.requestCallback<_tidemark_v1_ListTimeMarksReply__Output>): grpc.ClientUnaryCall;
  
  ListViews(argument: _tidemark_v1_ListViewsRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_ListViewsReply__Output>): grpc.ClientUnaryCall;
  ListViews(argument: _tidemark_v1_ListViewsRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_tidemark_v1_ListViewsReply__Output>): grpc.ClientUnaryCall;
  ListViews(argument: _tidemark_v1_ListViewsRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_ListViewsReply__Output>): grpc.ClientUnaryCall;
  ListViews(argument: _tidemark_v1_ListViewsRequest, callback: grpc.requestCallback<_tidemark_v1_ListViewsReply__Output>): grpc.ClientUnaryCall;
  listViews(argument: _tidemark_v1_ListViewsRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_ListViewsReply__Output>): grpc.ClientUnaryCall;
  listViews(argument: _tidemark_v1_ListViewsRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_tidemark_v1_ListViewsReply__Output>): grpc.ClientUnaryCall;
  listViews(argument: _tidemark_v1_ListViewsRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_ListViewsReply__Output>): grpc.ClientUnaryCall;
  listViews(argument: _tidemark_v1_ListViewsRequest, callback: grpc.requestCallback<_tidemark_v1_ListViewsReply__Output>): grpc.ClientUnaryCall;
  
  /**
   * Retention never expires a pinned TimeMark (nor anything after it).
   */
  PinTimeMark(argument: _tidemark_v1_PinTimeMarkRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_TimeMark__Output>): grpc.ClientUnaryCall;
  PinTimeMark(argument: _tidemark_v1_PinTimeMarkRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_tidemark_v1_TimeMark__Output>): grpc.ClientUnaryCall;
  PinTimeMark(argument: _tidemark_v1_PinTimeMarkRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_TimeMark__Output>): grpc.ClientUnaryCall;
  PinTimeMark(argument: _tidemark_v1_PinTimeMarkRequest, callback: grpc.requestCallback<_tidemark_v1_TimeMark__Output>): grpc.ClientUnaryCall;
  /**
   * Retention never expires a pinned TimeMark (nor anything after it).
   */
  pinTimeMark(argument: _tidemark_v1_PinTimeMarkRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_TimeMark__Output>): grpc.ClientUnaryCall;
  pinTimeMark(argument: _tidemark_v1_PinTimeMarkRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_tidemark_v1_TimeMark__Output>): grpc.ClientUnaryCall;
  pinTimeMark(argument: _tidemark_v1_PinTimeMarkRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_TimeMark__Output>): grpc.ClientUnaryCall;
  pinTimeMark(argument: _tidemark_v1_PinTimeMarkRequest, callback: grpc.requestCallback<_tidemark_v1_TimeMark__Output>): grpc.ClientUnaryCall;
  
  /**
   * Bytes of a volume at a seq (TimeViews read through this).
   */
  Read(argument: _tidemark_v1_ReadRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_ReadReply__Output>): grpc.ClientUnaryCall;
  Read(argument: _tidemark_v1_ReadRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_tidemark_v1_ReadReply__Output>): grpc.ClientUnaryCall;
  Read(argument: _tidemark_v1_ReadRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_ReadReply__Output>): grpc.ClientUnaryCall;
  Read(argument: _tidemark_v1_ReadRequest, callback: grpc.requestCallback<_tidemark_v1_ReadReply__Output>): grpc.ClientUnaryCall;
  /**
   * Bytes of a volume at a seq (TimeViews read through this).
   */
  read(argument: _tidemark_v1_ReadRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_ReadReply__Output>): grpc.ClientUnaryCall;
  read(argument: _tidemark_v1_ReadRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_tidemark_v1_ReadReply__Output>): grpc.ClientUnaryCall;
  read(argument: _tidemark_v1_ReadRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_ReadReply__Output>): grpc.ClientUnaryCall;
  read(argument: _tidemark_v1_ReadRequest, callback: grpc.requestCallback<_tidemark_v1_ReadReply__Output>): grpc.ClientUnaryCall;
  
  /**
   * The audit trail of recovery-plan actions (appliance/audit-trail.ts): one
   * entry per action, hash-chained, with the caller's identity. Recording
   * needs admin on every volume the entry names; listing shows the entries
   * whose volumes the caller may read.
   */
  RecordAudit(argument: _tidemark_v1_RecordAuditRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_AuditEntry__Output>): grpc.ClientUnaryCall;
  RecordAudit(argument: _tidemark_v1_RecordAuditRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_tidemark_v1_AuditEntry__Output>): grpc.ClientUnaryCall;
  RecordAudit(argument: _tidemark_v1_RecordAuditRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_AuditEntry__Output>): grpc.ClientUnaryCall;
  RecordAudit(argument: _tidemark_v1_RecordAuditRequest, callback: grpc.requestCallback<_tidemark_v1_AuditEntry__Output>): grpc.ClientUnaryCall;
  /**
   * The audit trail of recovery-plan actions (appliance/audit-trail.ts): one
   * entry per action, hash-chained, with the caller's identity. Recording
   * needs admin on every volume the entry names; listing shows the entries
   * whose volumes the caller may read.
   */
  recordAudit(argument: _tidemark_v1_RecordAuditRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_AuditEntry__Output>): grpc.ClientUnaryCall;
  recordAudit(argument: _tidemark_v1_RecordAuditRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_tidemark_v1_AuditEntry__Output>): grpc.ClientUnaryCall;
  recordAudit(argument: _tidemark_v1_RecordAuditRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_AuditEntry__Output>): grpc.ClientUnaryCall;
  recordAudit(argument: _tidemark_v1_RecordAuditRequest, callback: grpc.requestCallback<_tidemark_v1_AuditEntry__Output>): grpc.ClientUnaryCall;
  
  /**
   * Which seq a point names, and whether it can be restored.
   */
  Resolve(argument: _tidemark_v1_ResolveRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_ResolveReply__Output>): grpc.ClientUnaryCall;
  Resolve(argument: _tidemark_v1_ResolveRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_tidemark_v1_ResolveReply__Output>): grpc.ClientUnaryCall;
  Resolve(argument: _tidemark_v1_ResolveRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_ResolveReply__Output>): grpc.ClientUnaryCall;
  Resolve(argument: _tidemark_v1_ResolveRequest, callback: grpc.requestCallback<_tidemark_v1_ResolveReply__Output>): grpc.ClientUnaryCall;
  /**
   * Which seq a point names, and whether it can be restored.
   */
  resolve(argument: _tidemark_v1_ResolveRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_ResolveReply__Output>): grpc.ClientUnaryCall;
  resolve(argument: _tidemark_v1_ResolveRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_tidemark_v1_ResolveReply__Output>): grpc.ClientUnaryCall;
  resolve(argument: _tidemark_v1_ResolveRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_ResolveReply__Output>): grpc.ClientUnaryCall;
  resolve(argument: _tidemark_v1_ResolveRequest, callback: grpc.requestCallback<_tidemark_v1_ResolveReply__Output>): grpc.ClientUnaryCall;
  
  /**
   * An image of a volume at a point: the extents that are not all zero, in
   * offset order. The first message carries the volume size and the seq.
   */
  Restore(argument: _tidemark_v1_RestoreRequest, metadata: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientReadableStream<_tidemark_v1_ImageChunk__Output>;
  Restore(argument: _tidemark_v1_RestoreRequest, options?: grpc.CallOptions): grpc.ClientReadableStream<_tidemark_v1_ImageChunk__Output>;
  /**
   * An image of a volume at a point: the extents that are not all zero, in
   * offset order. The first message carries the volume size and the seq.
   */
  restore(argument: _tidemark_v1_RestoreRequest, metadata: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientReadableStream<_tidemark_v1_ImageChunk__Output>;
  restore(argument: _tidemark_v1_RestoreRequest, options?: grpc.CallOptions): grpc.ClientReadableStream<_tidemark_v1_ImageChunk__Output>;
  
  /**
   * A new volume whose first point is a disk the appliance reads itself from
   * an NBD export (reverse protection after a failover: the old production
   * disk, next to this appliance, still holds most of what the recovered
   * volume holds). The volume is created under `generation`, so the agent
   * that announces it continues this history: its initial copy compares
   * fingerprints and sends only the sectors that differ. The bytes become the
   * volume's base image at seq 1 (TimeMark "seed"), written and fsynced
   * before the volume appears under its name: a crash during the seed leaves
   * no volume. Refused for a volume that exists (any generation) or a source
   * that cannot be read, creating nothing. Needs the admin role on the volume.
   */
  SeedVolume(argument: _tidemark_v1_SeedVolumeRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_SeedVolumeReply__Output>): grpc.ClientUnaryCall;
  SeedVolume(argument: _tidemark_v1_SeedVolumeRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_tidemark_v1_SeedVolumeReply__Output>): grpc.ClientUnaryCall;
  SeedVolume(argument: _tidemark_v1_SeedVolumeRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_SeedVolumeReply__Output>): grpc.ClientUnaryCall;
  SeedVolume(argument: _tidemark_v1_SeedVolumeRequest, callback: grpc.requestCallback<_tidemark_v1_SeedVolumeReply__Output>): grpc.ClientUnaryCall;
  /**
   * A new volume whose first point is a disk the appliance reads itself from
   * an NBD export (reverse protection after a failover: the old production
   * disk, next to this appliance, still holds most of what the recovered
   * volume holds). The volume is created under `generation`, so the agent
   * that announces it continues this history: its initial copy compares
   * fingerprints and sends only the sectors that differ. The bytes become the
   * volume's base image at seq 1 (TimeMark "seed"), written and fsynced
   * before the volume appears under its name: a crash during the seed leaves
   * no volume. Refused for a volume that exists (any generation) or a source
   * that cannot be read, creating nothing. Needs the admin role on the volume.
   */
  seedVolume(argument: _tidemark_v1_SeedVolumeRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_SeedVolumeReply__Output>): grpc.ClientUnaryCall;
  seedVolume(argument: _tidemark_v1_SeedVolumeRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_tidemark_v1_SeedVolumeReply__Output>): grpc.ClientUnaryCall;
  seedVolume(argument: _tidemark_v1_SeedVolumeRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_SeedVolumeReply__Output>): grpc.ClientUnaryCall;
  seedVolume(argument: _tidemark_v1_SeedVolumeRequest, callback: grpc.requestCallback<_tidemark_v1_SeedVolumeReply__Output>): grpc.ClientUnaryCall;
  
  /**
   * What this appliance serves besides gRPC: its NBD endpoints (restore reads
   * a point through them when it can reach them).
   */
  ServerInfo(argument: _tidemark_v1_ServerInfoRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_ServerInfoReply__Output>): grpc.ClientUnaryCall;
  ServerInfo(argument: _tidemark_v1_ServerInfoRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_tidemark_v1_ServerInfoReply__Output>): grpc.ClientUnaryCall;
  ServerInfo(argument: _tidemark_v1_ServerInfoRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_ServerInfoReply__Output>): grpc.ClientUnaryCall;
  ServerInfo(argument: _tidemark_v1_ServerInfoRequest, callback: grpc.requestCallback<_tidemark_v1_ServerInfoReply__Output>): grpc.ClientUnaryCall;
  /**
   * What this appliance serves besides gRPC: its NBD endpoints (restore reads
   * a point through them when it can reach them).
   */
  serverInfo(argument: _tidemark_v1_ServerInfoRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_ServerInfoReply__Output>): grpc.ClientUnaryCall;
  serverInfo(argument: _tidemark_v1_ServerInfoRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_tidemark_v1_ServerInfoReply__Output>): grpc.ClientUnaryCall;
  serverInfo(argument: _tidemark_v1_ServerInfoRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_ServerInfoReply__Output>): grpc.ClientUnaryCall;
  serverInfo(argument: _tidemark_v1_ServerInfoRequest, callback: grpc.requestCallback<_tidemark_v1_ServerInfoReply__Output>): grpc.ClientUnaryCall;
  
  Stats(argument: _tidemark_v1_StatsRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_StatsReply__Output>): grpc.ClientUnaryCall;
  Stats(argument: _tidemark_v1_StatsRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_tidemark_v1_StatsReply__Output>): grpc.ClientUnaryCall;
  Stats(argument: _tidemark_v1_StatsRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_StatsReply__Output>): grpc.ClientUnaryCall;
  Stats(argument: _tidemark_v1_StatsRequest, callback: grpc.requestCallback<_tidemark_v1_StatsReply__Output>): grpc.ClientUnaryCall;
  stats(argument: _tidemark_v1_StatsRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_StatsReply__Output>): grpc.ClientUnaryCall;
  stats(argument: _tidemark_v1_StatsRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_tidemark_v1_StatsReply__Output>): grpc.ClientUnaryCall;
  stats(argument: _tidemark_v1_StatsRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_StatsReply__Output>): grpc.ClientUnaryCall;
  stats(argument: _tidemark_v1_StatsRequest, callback: grpc.requestCallback<_tidemark_v1_StatsReply__Output>): grpc.ClientUnaryCall;
  
}

export interface AdminHandlers extends grpc.UntypedServiceImplementation {
  /**
   * An agent announced a new generation or size for a volume and was refused:
   * the volume's history so far is kept, read-only and restorable, under a
   * new name (VOLUME.retired-N), and the agent's next hello starts a new
   * history under the volume's name. Needs the admin role.
   */
  AcceptGeneration: grpc.handleUnaryCall<_tidemark_v1_AcceptGenerationRequest__Output, _tidemark_v1_AcceptGenerationReply>;
  
  /**
   * Applies the volume's retention now: folds expired history into the base
   * image and reclaims its segments.
   */
  Compact: grpc.handleUnaryCall<_tidemark_v1_CompactRequest__Output, _tidemark_v1_CompactReply>;
  
  /**
   * Named views the appliance serves from its own NBD server (tidemark
   * timeview create|list|delete): a volume pinned at one seq, read-only or
   * with a durable copy-on-write overlay in the appliance's data directory.
   */
  CreateView: grpc.handleUnaryCall<_tidemark_v1_CreateViewRequest__Output, _tidemark_v1_ViewInfo>;
  
  DeleteView: grpc.handleUnaryCall<_tidemark_v1_DeleteViewRequest__Output, _tidemark_v1_ViewInfo>;
  
  /**
   * Per-sector fingerprints of some 64 KiB regions at a seq (failback
   * compares them with the production volume before sending anything).
   */
  Fingerprints: grpc.handleUnaryCall<_tidemark_v1_FingerprintsRequest__Output, _tidemark_v1_FingerprintsReply>;
  
  Journal: grpc.handleUnaryCall<_tidemark_v1_JournalRequest__Output, _tidemark_v1_JournalReply>;
  
  ListAudit: grpc.handleUnaryCall<_tidemark_v1_ListAuditRequest__Output, _tidemark_v1_ListAuditReply>;
  
  ListTimeMarks: grpc.handleUnaryCall<_tidemark_v1_ListTimeMarksRequest__Output, _tidemark_v1_ListTimeMarksReply>;
  
  ListViews: grpc.handleUnaryCall<_tidemark_v1_ListViewsRequest__Output, _tidemark_v1_ListViewsReply>;
  
  /**
   * Retention never expires a pinned TimeMark (nor anything after it).
   */
  PinTimeMark: grpc.handleUnaryCall<_tidemark_v1_PinTimeMarkRequest__Output, _tidemark_v1_TimeMark>;
  
  /**
   * Bytes of a volume at a seq (TimeViews read through this).
   */
  Read: grpc.handleUnaryCall<_tidemark_v1_ReadRequest__Output, _tidemark_v1_ReadReply>;
  
  /**
   * The audit trail of recovery-plan actions (appliance/audit-trail.ts): one
   * entry per action, hash-chained, with the caller's identity. Recording
   * needs admin on every volume the entry names; listing shows the entries
   * whose volumes the caller may read.
   */
  RecordAudit: grpc.handleUnaryCall<_tidemark_v1_RecordAuditRequest__Output, _tidemark_v1_AuditEntry>;
  
  /**
   * Which seq a point names, and whether it can be restored.
   */
  Resolve: grpc.handleUnaryCall<_tidemark_v1_ResolveRequest__Output, _tidemark_v1_ResolveReply>;
  
  /**
   * An image of a volume at a point: the extents that are not all zero, in
   * offset order. The first message carries the volume size and the seq.
   */
  Restore: grpc.handleServerStreamingCall<_tidemark_v1_RestoreRequest__Output, _tidemark_v1_ImageChunk>;
  
  /**
   * A new volume whose first point is a disk the appliance reads itself from
   * an NBD export (reverse protection after a failover: the old production
   * disk, next to this appliance, still holds most of what the recovered
   * volume holds). The volume is created under `generation`, so the agent
   * that announces it continues this history: its initial copy compares
   * fingerprints and sends only the sectors that differ. The bytes become the
   * volume's base image at seq 1 (TimeMark "seed"), written and fsynced
   * before the volume appears under its name: a crash during the seed leaves
   * no volume. Refused for a volume that exists (any generation) or a source
   * that cannot be read, creating nothing. Needs the admin role on the volume.
   */
  SeedVolume: grpc.handleUnaryCall<_tidemark_v1_SeedVolumeRequest__Output, _tidemark_v1_SeedVolumeReply>;
  
  /**
   * What this appliance serves besides gRPC: its NBD endpoints (restore reads
   * a point through them when it can reach them).
   */
  ServerInfo: grpc.handleUnaryCall<_tidemark_v1_ServerInfoRequest__Output, _tidemark_v1_ServerInfoReply>;
  
  Stats: grpc.handleUnaryCall<_tidemark_v1_StatsRequest__Output, _tidemark_v1_StatsReply>;
  
}

export interface AdminDefinition extends grpc.ServiceDefinition {
  AcceptGeneration: MethodDefinition<_tidemark_v1_AcceptGenerationRequest, _tidemark_v1_AcceptGenerationReply, _tidemark_v1_AcceptGenerationRequest__Output, _tidemark_v1_AcceptGenerationReply__Output>
  Compact: MethodDefinition<_tidemark_v1_CompactRequest, _tidemark_v1_CompactReply, _tidemark_v1_CompactRequest__Output, _tidemark_v1_CompactReply__Output>
  CreateView: MethodDefinition<_tidemark_v1_CreateViewRequest, _tidemark_v1_ViewInfo, _tidemark_v1_CreateViewRequest__Output, _tidemark_v1_ViewInfo__Output>
  DeleteView: MethodDefinition<_tidemark_v1_DeleteViewRequest, _tidemark_v1_ViewInfo, _tidemark_v1_DeleteViewRequest__Output, _tidemark_v1_ViewInfo__Output>
  Fingerprints: MethodDefinition<_tidemark_v1_FingerprintsRequest, _tidemark_v1_FingerprintsReply, _tidemark_v1_FingerprintsRequest__Output, _tidemark_v1_FingerprintsReply__Output>
  Journal: MethodDefinition<_tidemark_v1_JournalRequest, _tidemark_v1_JournalReply, _tidemark_v1_JournalRequest__Output, _tidemark_v1_JournalReply__Output>
  ListAudit: MethodDefinition<_tidemark_v1_ListAuditRequest, _tidemark_v1_ListAuditReply, _tidemark_v1_ListAuditRequest__Output, _tidemark_v1_ListAuditReply__Output>
  ListTimeMarks: MethodDefinition<_tidemark_v1_ListTimeMarksRequest, _tidemark_v1_ListTimeMarksReply, _tidemark_v1_ListTimeMarksRequest__Output, _tidemark_v1_ListTimeMarksReply__Output>
  ListViews: MethodDefinition<_tidemark_v1_ListViewsRequest, _tidemark_v1_ListViewsReply, _tidemark_v1_ListViewsRequest__Output, _tidemark_v1_ListViewsReply__Output>
  PinTimeMark: MethodDefinition<_tidemark_v1_PinTimeMarkRequest, _tidemark_v1_TimeMark, _tidemark_v1_PinTimeMarkRequest__Output, _tidemark_v1_TimeMark__Output>
  Read: MethodDefinition<_tidemark_v1_ReadRequest, _tidemark_v1_ReadReply, _tidemark_v1_ReadRequest__Output, _tidemark_v1_ReadReply__Output>
  RecordAudit: MethodDefinition<_tidemark_v1_RecordAuditRequest, _tidemark_v1_AuditEntry, _tidemark_v1_RecordAuditRequest__Output, _tidemark_v1_AuditEntry__Output>
  Resolve: MethodDefinition<_tidemark_v1_ResolveRequest, _tidemark_v1_ResolveReply, _tidemark_v1_ResolveRequest__Output, _tidemark_v1_ResolveReply__Output>
  Restore: MethodDefinition<_tidemark_v1_RestoreRequest, _tidemark_v1_ImageChunk, _tidemark_v1_RestoreRequest__Output, _tidemark_v1_ImageChunk__Output>
  SeedVolume: MethodDefinition<_tidemark_v1_SeedVolumeRequest, _tidemark_v1_SeedVolumeReply, _tidemark_v1_SeedVolumeRequest__Output, _tidemark_v1_SeedVolumeReply__Output>
  ServerInfo: MethodDefinition<_tidemark_v1_ServerInfoRequest, _tidemark_v1_ServerInfoReply, _tidemark_v1_ServerInfoRequest__Output, _tidemark_v1_ServerInfoReply__Output>
  Stats: MethodDefinition<_tidemark_v1_StatsRequest, _tidemark_v1_StatsReply, _tidemark_v1_StatsRequest__Output, _tidemark_v1_StatsReply__Output>
}
