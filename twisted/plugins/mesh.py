from twisted.application.service import ServiceMaker

mesh = ServiceMaker(
    "twisted_mesh",
    "twisted_mesh.tap",
    "A node of a p2p-today mesh network (meshes with py2p and js2p).",
    "mesh",
)
