import type * as grpc from '@grpc/grpc-js';
import type { MessageTypeDefinition } from '@grpc/proto-loader';

import type { AcceptGenerationReply as _tidemark_v1_AcceptGenerationReply, AcceptGenerationReply__Output as _tidemark_v1_AcceptGenerationReply__Output } from './tidemark/v1/AcceptGenerationReply';
import type { AcceptGenerationRequest as _tidemark_v1_AcceptGenerationRequest, AcceptGenerationRequest__Output as _tidemark_v1_AcceptGenerationRequest__Output } from './tidemark/v1/AcceptGenerationRequest';
import type { AdminClient as _tidemark_v1_AdminClient, AdminDefinition as _tidemark_v1_AdminDefinition } from './tidemark/v1/Admin';
import type { AgentStream as _tidemark_v1_AgentStream, AgentStream__Output as _tidemark_v1_AgentStream__Output } from './tidemark/v1/AgentStream';
import type { ApplianceStats as _tidemark_v1_ApplianceStats, ApplianceStats__Output as _tidemark_v1_ApplianceStats__Output } from './tidemark/v1/ApplianceStats';
import type { AuditEntry as _tidemark_v1_AuditEntry, AuditEntry__Output as _tidemark_v1_AuditEntry__Output } from './tidemark/v1/AuditEntry';
import type { BaseImage as _tidemark_v1_BaseImage, BaseImage__Output as _tidemark_v1_BaseImage__Output } from './tidemark/v1/BaseImage';
import type { CompactReply as _tidemark_v1_CompactReply, CompactReply__Output as _tidemark_v1_CompactReply__Output } from './tidemark/v1/CompactReply';
import type { CompactRequest as _tidemark_v1_CompactRequest, CompactRequest__Output as _tidemark_v1_CompactRequest__Output } from './tidemark/v1/CompactRequest';
import type { Compaction as _tidemark_v1_Compaction, Compaction__Output as _tidemark_v1_Compaction__Output } from './tidemark/v1/Compaction';
import type { CorruptRange as _tidemark_v1_CorruptRange, CorruptRange__Output as _tidemark_v1_CorruptRange__Output } from './tidemark/v1/CorruptRange';
import type { CreateViewRequest as _tidemark_v1_CreateViewRequest, CreateViewRequest__Output as _tidemark_v1_CreateViewRequest__Output } from './tidemark/v1/CreateViewRequest';
import type { DeleteViewRequest as _tidemark_v1_DeleteViewRequest, DeleteViewRequest__Output as _tidemark_v1_DeleteViewRequest__Output } from './tidemark/v1/DeleteViewRequest';
import type { FingerprintsReply as _tidemark_v1_FingerprintsReply, FingerprintsReply__Output as _tidemark_v1_FingerprintsReply__Output } from './tidemark/v1/FingerprintsReply';
import type { FingerprintsRequest as _tidemark_v1_FingerprintsRequest, FingerprintsRequest__Output as _tidemark_v1_FingerprintsRequest__Output } from './tidemark/v1/FingerprintsRequest';
import type { ImageChunk as _tidemark_v1_ImageChunk, ImageChunk__Output as _tidemark_v1_ImageChunk__Output } from './tidemark/v1/ImageChunk';
import type { InexactWindow as _tidemark_v1_InexactWindow, InexactWindow__Output as _tidemark_v1_InexactWindow__Output } from './tidemark/v1/InexactWindow';
import type { JournalReply as _tidemark_v1_JournalReply, JournalReply__Output as _tidemark_v1_JournalReply__Output } from './tidemark/v1/JournalReply';
import type { JournalRequest as _tidemark_v1_JournalRequest, JournalRequest__Output as _tidemark_v1_JournalRequest__Output } from './tidemark/v1/JournalRequest';
import type { ListAuditReply as _tidemark_v1_ListAuditReply, ListAuditReply__Output as _tidemark_v1_ListAuditReply__Output } from './tidemark/v1/ListAuditReply';
import type { ListAuditRequest as _tidemark_v1_ListAuditRequest, ListAuditRequest__Output as _tidemark_v1_ListAuditRequest__Output } from './tidemark/v1/ListAuditRequest';
import type { ListTimeMarksReply as _tidemark_v1_ListTimeMarksReply, ListTimeMarksReply__Output as _tidemark_v1_ListTimeMarksReply__Output } from './tidemark/v1/ListTimeMarksReply';
import type { ListTimeMarksRequest as _tidemark_v1_ListTimeMarksRequest, ListTimeMarksRequest__Output as _tidemark_v1_ListTimeMarksRequest__Output } from './tidemark/v1/ListTimeMarksRequest';
import type { ListViewsReply as _tidemark_v1_ListViewsReply, ListViewsReply__Output as _tidemark_v1_ListViewsReply__Output } from './tidemark/v1/ListViewsReply';
import type { ListViewsRequest as _tidemark_v1_ListViewsRequest, ListViewsRequest__Output as _tidemark_v1_ListViewsRequest__Output } from './tidemark/v1/ListViewsRequest';
import type { PinTimeMarkRequest as _tidemark_v1_PinTimeMarkRequest, PinTimeMarkRequest__Output as _tidemark_v1_PinTimeMarkRequest__Output } from './tidemark/v1/PinTimeMarkRequest';
import type { PointInTime as _tidemark_v1_PointInTime, PointInTime__Output as _tidemark_v1_PointInTime__Output } from './tidemark/v1/PointInTime';
import type { ReadReply as _tidemark_v1_ReadReply, ReadReply__Output as _tidemark_v1_ReadReply__Output } from './tidemark/v1/ReadReply';
import type { ReadRequest as _tidemark_v1_ReadRequest, ReadRequest__Output as _tidemark_v1_ReadRequest__Output } from './tidemark/v1/ReadRequest';
import type { RecordAuditRequest as _tidemark_v1_RecordAuditRequest, RecordAuditRequest__Output as _tidemark_v1_RecordAuditRequest__Output } from './tidemark/v1/RecordAuditRequest';
import type { RecordInfo as _tidemark_v1_RecordInfo, RecordInfo__Output as _tidemark_v1_RecordInfo__Output } from './tidemark/v1/RecordInfo';
import type { Rejections as _tidemark_v1_Rejections, Rejections__Output as _tidemark_v1_Rejections__Output } from './tidemark/v1/Rejections';
import type { ReplicaImageStatus as _tidemark_v1_ReplicaImageStatus, ReplicaImageStatus__Output as _tidemark_v1_ReplicaImageStatus__Output } from './tidemark/v1/ReplicaImageStatus';
import type { ResolveReply as _tidemark_v1_ResolveReply, ResolveReply__Output as _tidemark_v1_ResolveReply__Output } from './tidemark/v1/ResolveReply';
import type { ResolveRequest as _tidemark_v1_ResolveRequest, ResolveRequest__Output as _tidemark_v1_ResolveRequest__Output } from './tidemark/v1/ResolveRequest';
import type { RestoreRequest as _tidemark_v1_RestoreRequest, RestoreRequest__Output as _tidemark_v1_RestoreRequest__Output } from './tidemark/v1/RestoreRequest';
import type { RetentionStatus as _tidemark_v1_RetentionStatus, RetentionStatus__Output as _tidemark_v1_RetentionStatus__Output } from './tidemark/v1/RetentionStatus';
import type { SeedVolumeReply as _tidemark_v1_SeedVolumeReply, SeedVolumeReply__Output as _tidemark_v1_SeedVolumeReply__Output } from './tidemark/v1/SeedVolumeReply';
import type { SeedVolumeRequest as _tidemark_v1_SeedVolumeRequest, SeedVolumeRequest__Output as _tidemark_v1_SeedVolumeRequest__Output } from './tidemark/v1/SeedVolumeRequest';
import type { SegmentInfo as _tidemark_v1_SegmentInfo, SegmentInfo__Output as _tidemark_v1_SegmentInfo__Output } from './tidemark/v1/SegmentInfo';
import type { ServerInfoReply as _tidemark_v1_ServerInfoReply, ServerInfoReply__Output as _tidemark_v1_ServerInfoReply__Output } from './tidemark/v1/ServerInfoReply';
import type { ServerInfoRequest as _tidemark_v1_ServerInfoRequest, ServerInfoRequest__Output as _tidemark_v1_ServerInfoRequest__Output } from './tidemark/v1/ServerInfoRequest';
import type { StatsReply as _tidemark_v1_StatsReply, StatsReply__Output as _tidemark_v1_StatsReply__Output } from './tidemark/v1/StatsReply';
import type { StatsRequest as _tidemark_v1_StatsRequest, StatsRequest__Output as _tidemark_v1_StatsRequest__Output } from './tidemark/v1/StatsRequest';
import type { TimeMark as _tidemark_v1_TimeMark, TimeMark__Output as _tidemark_v1_TimeMark__Output } from './tidemark/v1/TimeMark';
import type { VerifyResult as _tidemark_v1_VerifyResult, VerifyResult__Output as _tidemark_v1_VerifyResult__Output } from './tidemark/v1/VerifyResult';
import type { ViewInfo as _tidemark_v1_ViewInfo, ViewInfo__Output as _tidemark_v1_ViewInfo__Output } from './tidemark/v1/ViewInfo';
import type { VolumeJournal as _tidemark_v1_VolumeJournal, VolumeJournal__Output as _tidemark_v1_VolumeJournal__Output } from './tidemark/v1/VolumeJournal';
import type { VolumeSeed as _tidemark_v1_VolumeSeed, VolumeSeed__Output as _tidemark_v1_VolumeSeed__Output } from './tidemark/v1/VolumeSeed';
import type { VolumeStats as _tidemark_v1_VolumeStats, VolumeStats__Output as _tidemark_v1_VolumeStats__Output } from './tidemark/v1/VolumeStats';

type SubtypeConstructor<Constructor extends new (...args: any) => any, Subtype> = {
  new(...args: ConstructorParameters<Constructor>): Subtype;
};

export interface ProtoGrpcType {
  tidemark: {
    v1: {
      AcceptGenerationReply: MessageTypeDefinition<_tidemark_v1_AcceptGenerationReply, _tidemark_v1_AcceptGenerationReply__Output>
      AcceptGenerationRequest: MessageTypeDefinition<_tidemark_v1_AcceptGenerationRequest, _tidemark_v1_AcceptGenerationRequest__Output>
      Admin: SubtypeConstructor<typeof grpc.Client, _tidemark_v1_AdminClient> & { service: _tidemark_v1_AdminDefinition }
      AgentStream: MessageTypeDefinition<_tidemark_v1_AgentStream, _tidemark_v1_AgentStream__Output>
      ApplianceStats: MessageTypeDefinition<_tidemark_v1_ApplianceStats, _tidemark_v1_ApplianceStats__Output>
      AuditEntry: MessageTypeDefinition<_tidemark_v1_AuditEntry, _tidemark_v1_AuditEntry__Output>
      BaseImage: MessageTypeDefinition<_tidemark_v1_BaseImage, _tidemark_v1_BaseImage__Output>
      CompactReply: MessageTypeDefinition<_tidemark_v1_CompactReply, _tidemark_v1_CompactReply__Output>
      CompactRequest: MessageTypeDefinition<_tidemark_v1_CompactRequest, _tidemark_v1_CompactRequest__Output>
      Compaction: MessageTypeDefinition<_tidemark_v1_Compaction, _tidemark_v1_Compaction__Output>
      CorruptRange: MessageTypeDefinition<_tidemark_v1_CorruptRange, _tidemark_v1_CorruptRange__Output>
      CreateViewRequest: MessageTypeDefinition<_tidemark_v1_CreateViewRequest, _tidemark_v1_CreateViewRequest__Output>
      DeleteViewRequest: MessageTypeDefinition<_tidemark_v1_DeleteViewRequest, _tidemark_v1_DeleteViewRequest__Output>
      FingerprintsReply: MessageTypeDefinition<_tidemark_v1_FingerprintsReply, _tidemark_v1_FingerprintsReply__Output>
      FingerprintsRequest: MessageTypeDefinition<_tidemark_v1_FingerprintsRequest, _tidemark_v1_FingerprintsRequest__Output>
      ImageChunk: MessageTypeDefinition<_tidemark_v1_ImageChunk, _tidemark_v1_ImageChunk__Output>
      InexactWindow: MessageTypeDefinition<_tidemark_v1_InexactWindow, _tidemark_v1_InexactWindow__Output>
      JournalReply: MessageTypeDefinition<_tidemark_v1_JournalReply, _tidemark_v1_JournalReply__Output>
      JournalRequest: MessageTypeDefinition<_tidemark_v1_JournalRequest, _tidemark_v1_JournalRequest__Output>
      ListAuditReply: MessageTypeDefinition<_tidemark_v1_ListAuditReply, _tidemark_v1_ListAuditReply__Output>
      ListAuditRequest: MessageTypeDefinition<_tidemark_v1_ListAuditRequest, _tidemark_v1_ListAuditRequest__Output>
      ListTimeMarksReply: MessageTypeDefinition<_tidemark_v1_ListTimeMarksReply, _tidemark_v1_ListTimeMarksReply__Output>
      ListTimeMarksRequest: MessageTypeDefinition<_tidemark_v1_ListTimeMarksRequest, _tidemark_v1_ListTimeMarksRequest__Output>
      ListViewsReply: MessageTypeDefinition<_tidemark_v1_ListViewsReply, _tidemark_v1_ListViewsReply__Output>
      ListViewsRequest: MessageTypeDefinition<_tidemark_v1_ListViewsRequest, _tidemark_v1_ListViewsRequest__Output>
      PinTimeMarkRequest: MessageTypeDefinition<_tidemark_v1_PinTimeMarkRequest, _tidemark_v1_PinTimeMarkRequest__Output>
      PointInTime: MessageTypeDefinition<_tidemark_v1_PointInTime, _tidemark_v1_PointInTime__Output>
      ReadReply: MessageTypeDefinition<_tidemark_v1_ReadReply, _tidemark_v1_ReadReply__Output>
      ReadRequest: MessageTypeDefinition<_tidemark_v1_ReadRequest, _tidemark_v1_ReadRequest__Output>
      RecordAuditRequest: MessageTypeDefinition<_tidemark_v1_RecordAuditRequest, _tidemark_v1_RecordAuditRequest__Output>
      RecordInfo: MessageTypeDefinition<_tidemark_v1_RecordInfo, _tidemark_v1_RecordInfo__Output>
      Rejections: MessageTypeDefinition<_tidemark_v1_Rejections, _tidemark_v1_Rejections__Output>
      ReplicaImageStatus: MessageTypeDefinition<_tidemark_v1_ReplicaImageStatus, _tidemark_v1_ReplicaImageStatus__Output>
      ResolveReply: MessageTypeDefinition<_tidemark_v1_ResolveReply, _tidemark_v1_ResolveReply__Output>
      ResolveRequest: MessageTypeDefinition<_tidemark_v1_ResolveRequest, _tidemark_v1_ResolveRequest__Output>
      RestoreRequest: MessageTypeDefinition<_tidemark_v1_RestoreRequest, _tidemark_v1_RestoreRequest__Output>
      RetentionStatus: MessageTypeDefinition<_tidemark_v1_RetentionStatus, _tidemark_v1_RetentionStatus__Output>
      SeedVolumeReply: MessageTypeDefinition<_tidemark_v1_SeedVolumeReply, _tidemark_v1_SeedVolumeReply__Output>
      SeedVolumeRequest: MessageTypeDefinition<_tidemark_v1_SeedVolumeRequest, _tidemark_v1_SeedVolumeRequest__Output>
      SegmentInfo: MessageTypeDefinition<_tidemark_v1_SegmentInfo, _tidemark_v1_SegmentInfo__Output>
      ServerInfoReply: MessageTypeDefinition<_tidemark_v1_ServerInfoReply, _tidemark_v1_ServerInfoReply__Output>
      ServerInfoRequest: MessageTypeDefinition<_tidemark_v1_ServerInfoRequest, _tidemark_v1_ServerInfoRequest__Output>
      StatsReply: MessageTypeDefinition<_tidemark_v1_StatsReply, _tidemark_v1_StatsReply__Output>
      StatsRequest: MessageTypeDefinition<_tidemark_v1_StatsRequest, _tidemark_v1_StatsRequest__Output>
      TimeMark: MessageTypeDefinition<_tidemark_v1_TimeMark, _tidemark_v1_TimeMark__Output>
      VerifyResult: MessageTypeDefinition<_tidemark_v1_VerifyResult, _tidemark_v1_VerifyResult__Output>
      ViewInfo: MessageTypeDefinition<_tidemark_v1_ViewInfo, _tidemark_v1_ViewInfo__Output>
      VolumeJournal: MessageTypeDefinition<_tidemark_v1_VolumeJournal, _tidemark_v1_VolumeJournal__Output>
      VolumeSeed: MessageTypeDefinition<_tidemark_v1_VolumeSeed, _tidemark_v1_VolumeSeed__Output>
      VolumeStats: MessageTypeDefinition<_tidemark_v1_VolumeStats, _tidemark_v1_VolumeStats__Output>
    }
  }
}

