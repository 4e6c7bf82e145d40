from django.contrib import admin

from .models import Assignment, Comparison, Completion, Judgment, Membership, Project, Prompt


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    raw_id_fields = ["user"]


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "overlap", "created_at"]
    search_fields = ["name", "slug"]
    inlines = [MembershipInline]


@admin.register(Prompt)
class PromptAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "preview", "split"]
    list_filter = ["split", "project"]


@admin.register(Completion)
class CompletionAdmin(admin.ModelAdmin):
    list_display = ["id", "prompt", "source", "model_version_id"]
    raw_id_fields = ["prompt"]


@admin.register(Comparison)
class ComparisonAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "kind", "round", "judgment_count"]
    list_filter = ["kind", "project"]
    raw_id_fields = ["prompt", "completion_a", "completion_b"]


@admin.register(Assignment)
class AssignmentAdmin(admin.ModelAdmin):
    list_display = ["id", "comparison", "annotator", "status", "left_is_a", "lease_expires"]
    list_filter = ["status"]
    raw_id_fields = ["comparison", "annotator"]


@admin.register(Judgment)
class JudgmentAdmin(admin.ModelAdmin):
    list_display = ["id", "comparison", "annotator", "choice", "strength", "created_at"]
    list_filter = ["choice", "project"]
    raw_id_fields = ["comparison", "annotator"]
