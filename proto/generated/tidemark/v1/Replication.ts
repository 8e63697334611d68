// Original file: proto/tidemark/v1/replication.proto

import type * as grpc from '@grpc/grpc-js'
import type { MethodDefinition } from '@grpc/proto-loader'
import type { AgentMessage as _tidemark_v1_AgentMessage, AgentMessage__Output as _tidemark_v1_AgentMessage__Output } from '../../tidemark/v1/AgentMessage';
import type { ApplianceMessage as _tidemark_v1_ApplianceMessage, ApplianceMessage__Output as _tidemark_v1_ApplianceMessage__Output } from '../../tidemark/v1/ApplianceMessage';

export interface ReplicationClient extends grpc.Client {
  Replicate(metadata: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientDuplexStream<_tidemark_v1_AgentMessage, _tidemark_v1_ApplianceMessage__Output>;
  Replicate(options?: grpc.CallOptions): grpc.ClientDuplexStream<_tidemark_v1_AgentMessage, _tidemark_v1_ApplianceMessage__Output>;
  replicate(metadata: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientDuplexStream<_tidemark_v1_AgentMessage, _tidemark_v1_ApplianceMessage__Output>;
  replicate(options?: grpc.CallOptions): grpc.ClientDuplexStream<_tidemark_v1_AgentMessage, _tidemark_v1_ApplianceMessage__Output>;
  
}

export interface ReplicationHandlers extends grpc.UntypedServiceImplementation {
  Replicate: grpc.handleBidiStreamingCall<_tidemark_v1_AgentMessage__Output, _tidemark_v1_ApplianceMessage>;
  
}

export interface ReplicationDefinition extends grpc.ServiceDefinition {
  Replicate: MethodDefinition<_tidemark_v1_AgentMessage, _tidemark_v1_ApplianceMessage, _tidemark_v1_AgentMessage__Output, _tidemark_v1_ApplianceMessage__Output>
}
