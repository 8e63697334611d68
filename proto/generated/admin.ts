import type * as grpc from '@grpc/grpc-js';
import type { MessageTypeDefinition } from '@grpc/proto-loader';

import type { AdminClient as _tidemark_v1_AdminClient, AdminDefinition as _tidemark_v1_AdminDefinition } from './tidemark/v1/Admin';
import type { ImageChunk as _tidemark_v1_ImageChunk, ImageChunk__Output as _tidemark_v1_ImageChunk__Output } from './tidemark/v1/ImageChunk';
import type { JournalReply as _tidemark_v1_JournalReply, JournalReply__Output as _tidemark_v1_JournalReply__Output } from './tidemark/v1/JournalReply';
import type { JournalRequest as _tidemark_v1_JournalRequest, JournalRequest__Output as _tidemark_v1_JournalRequest__Output } from './tidemark/v1/JournalRequest';
import type { PointInTime as _tidemark_v1_PointInTime, PointInTime__Output as _tidemark_v1_PointInTime__Output } from './tidemark/v1/PointInTime';
import type { RestoreRequest as _tidemark_v1_RestoreRequest, RestoreRequest__Output as _tidemark_v1_RestoreRequest__Output } from './tidemark/v1/RestoreRequest';
import type { StatsReply as _tidemark_v1_StatsReply, StatsReply__Output as _tidemark_v1_StatsReply__Output } from './tidemark/v1/StatsReply';
import type { StatsRequest as _tidemark_v1_StatsRequest, StatsRequest__Output as _tidemark_v1_StatsRequest__Output } from './tidemark/v1/StatsRequest';

type SubtypeConstructor<Constructor extends new (...args: any) => any, Subtype> = {
  new(...args: ConstructorParameters<Constructor>): Subtype;
};

export interface ProtoGrpcType {
  tidemark: {
    v1: {
      Admin: SubtypeConstructor<typeof grpc.Client, _tidemark_v1_AdminClient> & { service: _tidemark_v1_AdminDefinition }
      ImageChunk: MessageTypeDefinition<_tidemark_v1_ImageChunk, _tidemark_v1_ImageChunk__Output>
      JournalReply: MessageTypeDefinition<_tidemark_v1_JournalReply, _tidemark_v1_JournalReply__Output>
      JournalRequest: MessageTypeDefinition<_tidemark_v1_JournalRequest, _tidemark_v1_JournalRequest__Output>
      PointInTime: MessageTypeDefinition<_tidemark_v1_PointInTime, _tidemark_v1_PointInTime__Output>
      RestoreRequest: MessageTypeDefinition<_tidemark_v1_RestoreRequest, _tidemark_v1_RestoreRequest__Output>
      StatsReply: MessageTypeDefinition<_tidemark_v1_StatsReply, _tidemark_v1_StatsReply__Output>
      StatsRequest: MessageTypeDefinition<_tidemark_v1_StatsRequest, _tidemark_v1_StatsRequest__Output>
    }
  }
}

