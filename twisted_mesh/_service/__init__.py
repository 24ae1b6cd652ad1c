"""
The service's parts: endpoints, listeners, dialling, re-dialling and the
status report, which `twisted_mesh.service.MeshService` puts together.
"""
