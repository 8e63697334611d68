// Original file: proto/tidemark/v1/admin.proto

import type * as grpc from '@grpc/grpc-js'
import type { MethodDefinition } from '@grpc/proto-loader'
import type { ImageChunk as _tidemark_v1_ImageChunk, ImageChunk__Output as _tidemark_v1_ImageChunk__Output } from '../../tidemark/v1/ImageChunk';
import type { JournalReply as _tidemark_v1_JournalReply, JournalReply__Output as _tidemark_v1_JournalReply__Output } from '../../tidemark/v1/JournalReply';
import type { JournalRequest as _tidemark_v1_JournalRequest, JournalRequest__Output as _tidemark_v1_JournalRequest__Output } from '../../tidemark/v1/JournalRequest';
import type { RestoreRequest as _tidemark_v1_RestoreRequest, RestoreRequest__Output as _tidemark_v1_RestoreRequest__Output } from '../../tidemark/v1/RestoreRequest';
import type { StatsReply as _tidemark_v1_StatsReply, StatsReply__Output as _tidemark_v1_StatsReply__Output } from '../../tidemark/v1/StatsReply';
import type { StatsRequest as _tidemark_v1_StatsRequest, StatsRequest__Output as _tidemark_v1_StatsRequest__Output } from '../../tidemark/v1/StatsRequest';

export interface AdminClient extends grpc.Client {
  Journal(argument: _tidemark_v1_JournalRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_JournalReply__Output>): grpc.ClientUnaryCall;
  Journal(argument: _tidemark_v1_JournalRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_tidemark_v1_JournalReply__Output>): grpc.ClientUnaryCall;
  Journal(argument: _tidemark_v1_JournalRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_JournalReply__Output>): grpc.ClientUnaryCall;
  Journal(argument: _tidemark_v1_JournalRequest, callback: grpc.requestCallback<_tidemark_v1_JournalReply__Output>): grpc.ClientUnaryCall;
  journal(argument: _tidemark_v1_JournalRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_JournalReply__Output>): grpc.ClientUnaryCall;
  journal(argument: _tidemark_v1_JournalRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_tidemark_v1_JournalReply__Output>): grpc.ClientUnaryCall;
  journal(argument: _tidemark_v1_JournalRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_JournalReply__Output>): grpc.ClientUnaryCall;
  journal(argument: _tidemark_v1_JournalRequest, callback: grpc.requestCallback<_tidemark_v1_JournalReply__Output>): grpc.ClientUnaryCall;
  
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
  Journal: grpc.handleUnaryCall<_tidemark_v1_JournalRequest__Output, _tidemark_v1_JournalReply>;
  
  /**
   * An image of a volume at a point: the extents that are not all zero, in
   * offset order. The first message carries the volume size and the seq.
   */
  Restore: grpc.handleServerStreamingCall<_tidemark_v1_RestoreRequest__Output, _tidemark_v1_ImageChunk>;
  
  Stats: grpc.handleUnaryCall<_tidemark_v1_StatsRequest__Output, _tidemark_v1_StatsReply>;
  
}

export interface AdminDefinition extends grpc.ServiceDefinition {
  Journal: MethodDefinition<_tidemark_v1_JournalRequest, _tidemark_v1_JournalReply, _tidemark_v1_JournalRequest__Output, _tidemark_v1_JournalReply__Output>
  Restore: MethodDefinition<_tidemark_v1_RestoreRequest, _tidemark_v1_ImageChunk, _tidemark_v1_RestoreRequest__Output, _tidemark_v1_ImageChunk__Output>
  Stats: MethodDefinition<_tidemark_v1_StatsRequest, _tidemark_v1_StatsReply, _tidemark_v1_StatsRequest__Output, _tidemark_v1_StatsReply__Output>
}
