import grpc
from marchproxy.proto import module_pb2, module_pb2_grpc

def get_status():
    with grpc.insecure_channel('localhost:50053') as channel:
        stub = module_pb2_grpc.ModuleServiceStub(channel)
        response = stub.GetStatus(module_pb2.Empty())
        return response

if __name__ == '__main__':
    status = get_status()
    print(f"Module: {status.module_name}")
    print(f"Status: {status.status}")
    print(f"Active streams: {status.active_streams}")
