"""
The service's parts: endpoints, listeners, dialling, re-dialling and the
status report, which `twisted_mesh.service.MeshService` puts together; and
the addresses a command line gives, which the faces check with them.
"""
