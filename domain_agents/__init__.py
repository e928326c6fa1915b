"""Domain agents: the infrastructure under a leaf SP, behind one ``DomainAgent`` protocol."""
