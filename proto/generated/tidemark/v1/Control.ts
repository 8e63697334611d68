// Original file: proto/tidemark/v1/control.proto

import type * as grpc from '@grpc/grpc-js'
import type { MethodDefinition } from '@grpc/proto-loader'
import type { CreateTimeMarkReply as _tidemark_v1_CreateTimeMarkReply, CreateTimeMarkReply__Output as _tidemark_v1_CreateTimeMarkReply__Output } from '../../tidemark/v1/CreateTimeMarkReply';
import type { CreateTimeMarkRequest as _tidemark_v1_CreateTimeMarkRequest, CreateTimeMarkRequest__Output as _tidemark_v1_CreateTimeMarkRequest__Output } from '../../tidemark/v1/CreateTimeMarkRequest';

export interface ControlClient extends grpc.Client {
  /**
   * Quiesce (optional hook), barrier, thaw (always, once quiesce ran), tag
   * the stream of every volume in scope; by default waits until the
   * appliance holds the mark durably.
   */
  CreateTimeMark(argument: _tidemark_v1_CreateTimeMarkRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_CreateTimeMarkReply__Output>): grpc.ClientUnaryCall;
  CreateTimeMark(argument: _tidemark_v1_CreateTimeMarkRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_tidemark_v1_CreateTimeMarkReply__Output>): grpc.ClientUnaryCall;
  CreateTimeMark(argument: _tidemark_v1_CreateTimeMarkRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_CreateTimeMarkReply__Output>): grpc.ClientUnaryCall;
  CreateTimeMark(argument: _tidemark_v1_CreateTimeMarkRequest, callback: grpc.requestCallback<_tidemark_v1_CreateTimeMarkReply__Output>): grpc.ClientUnaryCall;
  /**
   * Quiesce (optional hook), barrier, thaw (always, once quiesce ran), tag
   * the stream of every volume in scope; by default waits until the
   * appliance holds the mark durably.
   */
  createTimeMark(argument: _tidemark_v1_CreateTimeMarkRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_CreateTimeMarkReply__Output>): grpc.ClientUnaryCall;
  createTimeMark(argument: _tidemark_v1_CreateTimeMarkRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_tidemark_v1_CreateTimeMarkReply__Output>): grpc.ClientUnaryCall;
  createTimeMark(argument: _tidemark_v1_CreateTimeMarkRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_tidemark_v1_CreateTimeMarkReply__Output>): grpc.ClientUnaryCall;
  createTimeMark(argument: _tidemark_v1_CreateTimeMarkRequest, callback: grpc.requestCallback<_tidemark_v1_CreateTimeMarkReply__Output>): grpc.ClientUnaryCall;
  
}

export interface ControlHandlers extends grpc.UntypedServiceImplementation {
  /**
   * Quiesce (optional hook), barrier, thaw (always, once quiesce ran), tag
   * the stream of every volume in scope; by default waits until the
   * appliance holds the mark durably.
   */
  CreateTimeMark: grpc.handleUnaryCall<_tidemark_v1_CreateTimeMarkRequest__Output, _tidemark_v1_CreateTimeMarkReply>;
  
}

export interface ControlDefinition extends grpc.ServiceDefinition {
  CreateTimeMark: MethodDefinition<_tidemark_v1_CreateTimeMarkRequest, _tidemark_v1_CreateTimeMarkReply, _tidemark_v1_CreateTimeMarkRequest__Output, _tidemark_v1_CreateTimeMarkReply__Output>
}
